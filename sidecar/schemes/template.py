"""Header and signature templates (``"Bearer {api_key}"``, ``"{timestamp}\\n{method}"``).

Parsed once at config load into literal text and placeholder names, so rendering on the hot
path is a join; unknown placeholders, format specs and conversions are config errors.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping

# Control characters never go into a header value (CR/LF would split the header).
CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class Template:
    """A template parsed once: literal text and placeholder names, rendered by joining."""

    def __init__(self, text: str, allowed: frozenset[str]) -> None:
        parts: list[tuple[str, str | None]] = []
        for literal, name, spec, conversion in string.Formatter().parse(text):
            if name is not None and name not in allowed:
                raise ValueError(f"unknown placeholder {{{name}}} in {text!r}")
            if spec or conversion:
                raise ValueError(f"placeholder {{{name}}} takes no format spec or conversion")
            parts.append((literal, name))
        self.parts = tuple(parts)
        self.names = tuple(name for _, name in parts if name is not None)

    def render(self, values: Mapping[str, str]) -> str:
        return "".join(lit + ("" if name is None else values[name]) for lit, name in self.parts)
