"""The no-leak scan: every secret, raw or encoded, searched for in everything we collected."""

from __future__ import annotations

import base64
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import aiohttp


def encodings(secret: str) -> set[str]:
    raw = secret.encode()
    return {
        secret,
        base64.b64encode(raw).decode().rstrip("="),
        base64.urlsafe_b64encode(raw).decode().rstrip("="),
        raw.hex(),
        raw.hex().upper(),
    }


@dataclass
class Collected:
    """Everything an observer could see: response bodies and headers, log lines, metrics."""

    texts: list[str] = field(default_factory=list)

    def add(self, text: str) -> None:
        self.texts.append(text)

    async def response(self, resp: aiohttp.ClientResponse) -> Any:
        body = await resp.text()
        self.add(body)
        self.add("\n".join(f"{k}: {v}" for k, v in resp.headers.items()))
        return body

    def hits(self, secrets: Iterable[str]) -> list[tuple[str, int]]:
        found = []
        for secret in secrets:
            for needle in encodings(secret):
                for i, text in enumerate(self.texts):
                    if needle in text:
                        found.append((secret[:4] + "...", i))
        return found

    @property
    def size(self) -> tuple[int, int]:
        """(texts, lines) scanned."""
        return len(self.texts), sum(t.count("\n") + 1 for t in self.texts)
