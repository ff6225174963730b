"""KeyStore: proxy keys in KV v2, the in-memory indexes, and keeping the two in step.

A key is one KV record at ``<prefix>/keys/<credential>/<key_id>`` holding its permissions,
flags, a transit HMAC of the key (``key_hmac``) and, for HMAC-enabled keys, the HMAC key as
transit ciphertext: KV alone holds no usable key material. Decrypted HMAC keys are loaded by a
sync (at bootstrap and with the runtime's periodic sync) or at creation, never per request.

Disable and delete take effect in memory *before* anything is written, so the next proxied
request is already refused; ``pending`` and ``deleted`` in the index stop a concurrent sync
from bringing back the old state. A failed write marks the entry stale (version 0) so the
next sync re-reads the truth from KV.
"""

from __future__ import annotations

import asyncio
import hmac
import secrets
from datetime import datetime
from typing import Any

from sidecar.errors import SidecarError
from sidecar.logging import SECRETS, get_logger
from sidecar.proxykeys.index import KeyEntry, KeyIndex, local_digest
from sidecar.proxykeys.permissions import Permission, parse_all
from sidecar.proxykeys.signing import ReplayGuard
from sidecar.timestamps import now_iso
from sidecar.vault import Vault, hmac_key_version

log = get_logger("sidecar.proxykeys")
FOLDER = "keys"


def key_path(credential: str, key_id: str) -> str:
    return f"{FOLDER}/{credential}/{key_id}"


def _entry(
    credential: str, key_id: str, record: dict[str, Any], version: int, hmac_key: str | None
) -> KeyEntry:
    expires = record.get("expires_at")
    return KeyEntry(
        key_id=key_id,
        credential=credential,
        permissions=parse_all(record["permissions"]),
        hmac_enabled=bool(record["hmac_enabled"]),
        enabled=bool(record["enabled"]),
        expires_at=expires,
        expires_ts=datetime.fromisoformat(expires).timestamp() if expires else None,
        created_at=record["created_at"],
        updated_at=record["updated_at"],
        version=version,
        digest=record["key_hmac"],
        hmac_key=hmac_key.encode() if hmac_key is not None else None,
    )


class KeyStore:
    def __init__(self, vault: Vault) -> None:
        self.vault = vault
        self.indexes: dict[str, KeyIndex] = {}
        self.replays = ReplayGuard()
        self.loaded = False

    def index(self, credential: str) -> KeyIndex:
        found = self.indexes.get(credential)
        if found is None:
            found = self.indexes[credential] = KeyIndex(credential)
        return found

    # -- the proxy's side -------------------------------------------------------------------

    async def authenticate(self, credential: str, key: str) -> KeyEntry:
        """Memory only, except one transit HMAC the first time a key shows up after a start."""
        if not self.loaded:  # requests that arrive before the first sync
            await self.refresh(credential)
        return await self.index(credential).authenticate(key, self._transit_check)

    async def _transit_check(self, key: str, digest: str) -> bool:
        (mine,) = await self.vault.hmac([key], key_version=hmac_key_version(digest))
        return hmac.compare_digest(mine.encode(), digest.encode())

    # -- the admin's side -------------------------------------------------------------------

    async def issue(
        self,
        credential: str,
        permissions: tuple[Permission, ...],
        with_hmac: bool,
        expires_at: str | None,
    ) -> tuple[KeyEntry, str, str | None]:
        """(entry, key, hmac key): the caller shows the two secrets once and forgets them."""
        key_id = "pk" + secrets.token_hex(8)
        key = f"sck_{key_id}_{secrets.token_urlsafe(32)}"
        hmac_key = secrets.token_urlsafe(32) if with_hmac else None
        (digest,), ciphertext = await asyncio.gather(
            self.vault.hmac([key]), self._encrypt(hmac_key)
        )
        stamp = now_iso()
        record: dict[str, Any] = {
            "permissions": [p.text for p in permissions],
            "hmac_enabled": with_hmac,
            "enabled": True,
            "expires_at": expires_at,
            "created_at": stamp,
            "updated_at": stamp,
            "key_hmac": digest,
            "hmac_key_ciphertext": ciphertext,
        }
        version = await self.vault.kv_write(key_path(credential, key_id), record, cas=0)
        entry = _entry(credential, key_id, record, version, hmac_key)
        entry.local = local_digest(key)  # this process knows the key: no transit HMAC later
        self._remember(self.index(credential), entry)
        log.info("proxy_key_issued", credential=credential, key_id=key_id, hmac_enabled=with_hmac)
        return entry, key, hmac_key

    async def _encrypt(self, hmac_key: str | None) -> str | None:
        return (await self.vault.encrypt([hmac_key]))[0] if hmac_key is not None else None

    async def entries(self, credential: str) -> list[KeyEntry]:
        """Fresh from KV (admin reads may be served by a replica that has not synced yet)."""
        await self.refresh(credential)
        index = self.index(credential)
        return sorted(index.entries.values(), key=lambda e: (e.created_at, e.key_id))

    async def entry(self, credential: str, key_id: str) -> KeyEntry:
        await self.refresh(credential)
        found = self.index(credential).entries.get(key_id)
        if found is None:
            raise SidecarError("SC5006", f"No proxy key {key_id!r} for {credential!r}")
        return found

    async def set_enabled(self, credential: str, key_id: str, enabled: bool) -> KeyEntry:
        index = self.index(credential)
        current = index.entries.get(key_id)
        if current is not None:
            current.enabled = enabled  # the very next proxied request sees it
        index.pending.add(key_id)
        try:
            return await self._write_enabled(index, key_id, enabled)
        except SidecarError:
            if current is not None:
                current.version = 0  # stale: the next sync re-reads what KV really holds
            raise
        finally:
            index.pending.discard(key_id)

    async def _write_enabled(self, index: KeyIndex, key_id: str, enabled: bool) -> KeyEntry:
        path = key_path(index.credential, key_id)
        found = await self.vault.kv_read(path)
        if found is None:
            index.entries.pop(key_id, None)
            raise SidecarError("SC5006", f"No proxy key {key_id!r} for {index.credential!r}")
        record = {**found[0], "enabled": enabled, "updated_at": now_iso()}
        version = await self.vault.kv_write(path, record, cas=found[1])
        entry = index.entries.get(key_id)
        if entry is None:
            entry = await self._load(index.credential, key_id, record, version)
            self._remember(index, entry)
        entry.enabled, entry.updated_at, entry.version = enabled, record["updated_at"], version
        log.info("proxy_key_updated", credential=index.credential, key_id=key_id, enabled=enabled)
        return entry

    async def delete(self, credential: str, key_id: str) -> None:
        index = self.index(credential)
        gone = index.entries.pop(key_id, None)  # refused from now on, before Vault answers
        index.deleted.add(key_id)
        if gone is not None and gone.hmac_key is not None:
            SECRETS.discard([gone.hmac_key.decode()])
        path = key_path(credential, key_id)
        if await self.vault.kv_metadata(path) is None:
            index.deleted.discard(key_id)
            raise SidecarError("SC5006", f"No proxy key {key_id!r} for {credential!r}")
        await self.vault.kv_delete(path)
        log.info("proxy_key_deleted", credential=credential, key_id=key_id)

    # -- keeping memory true ----------------------------------------------------------------

    async def sync(self) -> int:
        """Every credential's keys: new and changed ones re-read, deleted ones dropped."""
        listed = {c.rstrip("/") for c in await self.vault.kv_list(FOLDER) if c.endswith("/")}
        changed = sum(self._drop(self.indexes[c], set()) for c in set(self.indexes) - listed)
        for credential in sorted(listed):
            changed += await self.refresh(credential)
        self.loaded = True
        return changed

    async def refresh(self, credential: str) -> int:
        index = self.index(credential)
        folder = f"{FOLDER}/{credential}"
        listed = {k for k in await self.vault.kv_list(folder) if not k.endswith("/")}
        changed = self._drop(index, listed)
        for key_id in sorted(listed):
            if index.accepts_sync(key_id) and await self._changed(index, key_id):
                changed += await self._reread(index, key_id)
        return changed

    def _drop(self, index: KeyIndex, listed: set[str]) -> int:
        """Forget keys KV no longer lists; a tombstone is cleared once KV agrees."""
        index.deleted &= listed
        gone = [k for k in index.entries if k not in listed and k not in index.pending]
        for key_id in gone:
            entry = index.entries.pop(key_id)
            if entry.hmac_key is not None:
                SECRETS.discard([entry.hmac_key.decode()])
        return len(gone)

    async def _changed(self, index: KeyIndex, key_id: str) -> bool:
        meta = await self.vault.kv_metadata(key_path(index.credential, key_id))
        entry = index.entries.get(key_id)
        return meta is not None and (entry is None or entry.version != int(meta["current_version"]))

    async def _reread(self, index: KeyIndex, key_id: str) -> int:
        found = await self.vault.kv_read(key_path(index.credential, key_id))
        if found is None:
            return 0
        try:
            entry = await self._load(index.credential, key_id, *found)
        except (KeyError, TypeError, ValueError):
            log.warning("proxy_key_unreadable", credential=index.credential, key_id=key_id)
            return 0
        if not index.accepts_sync(key_id):  # disabled or deleted while Vault answered
            return 0
        self._remember(index, entry)
        return 1

    async def _load(
        self, credential: str, key_id: str, record: dict[str, Any], version: int
    ) -> KeyEntry:
        ciphertext = record.get("hmac_key_ciphertext")
        plain = (await self.vault.decrypt([ciphertext]))[0] if ciphertext else None
        return _entry(credential, key_id, record, version, plain)

    @staticmethod
    def _remember(index: KeyIndex, entry: KeyEntry) -> None:
        if entry.hmac_key is not None:
            SECRETS.add([entry.hmac_key.decode()])
        index.put(entry)
