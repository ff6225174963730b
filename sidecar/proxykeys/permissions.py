"""Permitted operations of a proxy key: ``METHOD /path-pattern``, compiled once at load.

The path is upstream-relative (``/api/session``, not ``/<upstream>/api/session``), matched
after percent-decoding and without the query, so ``/api/%73ession`` is ``/api/session`` for the
check exactly as it is for the provider. Decoding must not change the path's structure, so
``decoded_path`` refuses what would: a fragment (never sent, SC4027) and an encoded slash or
backslash or a bare backslash (a separator to some providers, not to the check, SC4028); the
proxy applies the same refusal before routing, so the checked path is the path that is sent.
``*`` matches any run of characters, ``/`` included:
``GET /api/session/*`` covers ``/api/session/1`` and ``/api/session/1/events`` but not
``/api/session``. A method of ``*`` means any method; ``GET`` does not imply ``HEAD``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import unquote

from sidecar.errors import SidecarError

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "*"})
MAX_PERMISSIONS = 64
MAX_PATTERN = 512
ALL = "* /*"
_PATTERN = re.compile(r"/[\x21-\x7e]*\Z")
_SEPARATORS = re.compile(r"%2f|%5c|\\", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Permission:
    """One permitted operation; ``text`` is what the admin wrote and what audit events show."""

    method: str
    pattern: str
    regex: re.Pattern[str] = field(repr=False, compare=False)

    @property
    def text(self) -> str:
        return f"{self.method} {self.pattern}"

    def allows(self, method: str, path: str) -> bool:
        return (self.method in ("*", method)) and self.regex.fullmatch(path) is not None


def parse(text: str) -> Permission:
    """``"post /api/session"`` -> Permission; a ValueError says what is wrong, never echoing it."""
    method, sep, pattern = text.strip().partition(" ")
    method = method.upper()
    if not sep or method not in METHODS:
        raise ValueError("must be 'METHOD /path' with METHOD an HTTP method or *")
    pattern = pattern.strip()
    if len(pattern) > MAX_PATTERN or not _PATTERN.match(pattern) or any(c in pattern for c in "?#"):
        raise ValueError("path must start with / and hold no spaces, query or fragment")
    regex = re.compile(".*".join(re.escape(part) for part in pattern.split("*")))
    return Permission(method, pattern, regex)


def parse_all(texts: Iterable[str]) -> tuple[Permission, ...]:
    """Parse, de-duplicate and bound; an empty list would permit nothing, so it is refused."""
    seen: dict[str, Permission] = {}
    for text in texts:
        permission = parse(text)
        seen.setdefault(permission.text, permission)
    if not seen:
        raise ValueError("at least one permission is required")
    if len(seen) > MAX_PERMISSIONS:
        raise ValueError(f"at most {MAX_PERMISSIONS} permissions per key")
    return tuple(seen.values())


def first_match(permissions: Iterable[Permission], method: str, path: str) -> Permission | None:
    """The first permission allowing ``method path``; its pattern becomes the audit template."""
    return next((p for p in permissions if p.allows(method, path)), None)


def decoded_path(raw_path: str) -> str:
    """The raw path as the provider reads it (percent-decoded once), or SC4027/SC4028."""
    if "#" in raw_path:
        raise SidecarError("SC4027")
    if _SEPARATORS.search(raw_path):
        raise SidecarError("SC4028")
    return unquote(raw_path)
