"""The in-memory index of one credential's proxy keys: the proxy checks keys here, not in Vault.

KV holds only a transit HMAC of each key, and Vault is not to be called per request. So the
first time a key is presented after a start its transit HMAC is computed once (one Vault call,
single-flight per key) and compared in constant time; from then on the index keeps a *local*
digest, HMAC-SHA256 under a random per-process pepper, and every later check is pure memory.
The pepper never leaves the process, so the local digests are worthless outside it.

A wrong key for a known key id is remembered (by its local digest, bounded per key), so
hammering one key id with the same bad value costs Vault one call, not one per attempt.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from sidecar.errors import SidecarError
from sidecar.proxykeys.permissions import Permission

KEY_RE = re.compile(r"sck_(pk[0-9a-f]{16})_[A-Za-z0-9_-]{43}\Z")
MAX_REJECTED = 256
_PEPPER = secrets.token_bytes(32)

# (presented key, stored transit digest) -> does Vault's HMAC of the key equal the digest?
TransitCheck = Callable[[str, str], Awaitable[bool]]


def local_digest(key: str) -> bytes:
    return hmac.new(_PEPPER, key.encode(), hashlib.sha256).digest()


def key_id_of(key: str) -> str | None:
    match = KEY_RE.match(key)
    return match.group(1) if match else None


@dataclass(slots=True)
class KeyEntry:
    """One key as the proxy sees it; ``version`` is the KV version it was read at."""

    key_id: str
    credential: str
    permissions: tuple[Permission, ...]
    hmac_enabled: bool
    enabled: bool
    expires_at: str | None
    expires_ts: float | None
    created_at: str
    updated_at: str
    version: int
    digest: str = field(repr=False)
    hmac_key: bytes | None = field(default=None, repr=False)
    local: bytes | None = field(default=None, repr=False)
    rejected: OrderedDict[bytes, None] = field(default_factory=OrderedDict, repr=False)
    last_used_at: str | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)

    def usable(self, now: float) -> bool:
        return self.enabled and (self.expires_ts is None or now < self.expires_ts)

    def reject(self, digest: bytes) -> None:
        self.rejected[digest] = None
        if len(self.rejected) > MAX_REJECTED:
            self.rejected.popitem(last=False)

    def inherit(self, old: KeyEntry) -> None:
        """A re-read of the same key keeps what this process learnt about it."""
        if old.digest == self.digest:
            self.local, self.rejected = old.local, old.rejected
        self.last_used_at = old.last_used_at


class KeyIndex:
    """One credential's keys. ``pending`` and ``deleted`` keep a sync from undoing local changes."""

    def __init__(self, credential: str) -> None:
        self.credential = credential
        self.entries: dict[str, KeyEntry] = {}
        self.pending: set[str] = set()
        self.deleted: set[str] = set()

    def put(self, entry: KeyEntry) -> None:
        old = self.entries.get(entry.key_id)
        if old is not None:
            entry.inherit(old)
        self.entries[entry.key_id] = entry

    def live(self, key_id: str, version: int) -> KeyEntry | None:
        """The entry while usable and unchanged since ``version``: an opaque token bound to a
        key (``sidecar.proxy.tokens``) dies with any change to the key, even a re-enable."""
        entry = self.entries.get(key_id)
        if entry is None or entry.version != version or not entry.usable(time.time()):
            return None
        return entry

    def accepts_sync(self, key_id: str) -> bool:
        return key_id not in self.pending and key_id not in self.deleted

    async def authenticate(self, key: str, check: TransitCheck) -> KeyEntry:
        """The entry for ``key`` or SC5002; calls ``check`` only for a key not yet seen."""
        key_id = key_id_of(key)
        entry = self.entries.get(key_id or "")
        if key_id is None or entry is None or not entry.usable(time.time()):
            raise SidecarError("SC5002")
        mine = local_digest(key)
        if entry.local is None and mine not in entry.rejected:
            async with entry.lock:  # a burst of first presentations makes one Vault call
                await self._first_sight(entry, key, mine, check)
        if entry.local is None or not hmac.compare_digest(entry.local, mine):
            raise SidecarError("SC5002")
        current = self.entries.get(entry.key_id)  # deleted or disabled while Vault answered?
        if current is None or not current.usable(time.time()):
            raise SidecarError("SC5002")
        return current

    @staticmethod
    async def _first_sight(entry: KeyEntry, key: str, mine: bytes, check: TransitCheck) -> None:
        if entry.local is not None or mine in entry.rejected:
            return
        if await check(key, entry.digest):
            entry.local = mine
        else:
            entry.reject(mine)
