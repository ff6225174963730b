"""CredentialStore: records in KV v2, secret fields through transit, an in-memory cache.

A record is one KV v2 secret at ``<prefix>/credentials/<name>``. Secret fields are stored as
a transit ciphertext plus a transit HMAC fingerprint (for verify without decrypting), so KV
alone never holds a plaintext secret. Every write is a check-and-set against the version that
was read: two concurrent replaces cannot mix, the loser gets SC2002 (409).

The proxy reads only the cache (``cached``), so steady-state proxying makes no Vault request.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from pydantic import ValidationError

from sidecar.errors import SidecarError
from sidecar.logging import SECRETS, get_logger
from sidecar.record import CredentialRecord, CredentialView, SealedSecret, describe
from sidecar.schemes.base import Credential
from sidecar.timestamps import now_iso, parse_iso
from sidecar.vault import Vault, hmac_key_version

log = get_logger("sidecar.store")
FOLDER = "credentials"


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """Which fields an upstream's scheme declares: the store validates bodies against it."""

    scheme: str
    public: tuple[str, ...]
    secret: tuple[str, ...]
    optional: tuple[str, ...]

    def check(self, fields: Mapping[str, Any]) -> tuple[dict[str, str], dict[str, str]]:
        """Split submitted fields into (public, secret); refuse unknown, missing or non-string."""
        problems: list[str] = []
        known = (*self.public, *self.secret)
        for key, value in fields.items():
            if key not in known:
                problems.append(f"fields.{key}: unknown field for scheme {self.scheme}")
            elif not isinstance(value, str) or not value:
                problems.append(f"fields.{key}: must be a non-empty string")
        for key in known:
            if key not in fields and key not in self.optional:
                problems.append(f"fields.{key}: required")
        if problems:
            raise SidecarError("SC1002", "; ".join(problems))
        public = {k: str(v) for k, v in fields.items() if k in self.public}
        secret = {k: str(v) for k, v in fields.items() if k in self.secret}
        no_private_key({"fields": public})
        return public, secret


def no_private_key(plain: Mapping[str, Any]) -> None:
    """KV holds public fields and provider_data as plaintext, and GET returns them: a PEM
    private key pasted there by mistake is refused (SC1002), never stored."""
    for where, values in plain.items():
        for key, value in values.items():
            if "PRIVATE KEY-----" in json.dumps(value):
                raise SidecarError("SC1002", f"{where}.{key}: holds a private key; not stored")


class CredentialStore:
    def __init__(self, vault: Vault, specs: Callable[[str], FieldSpec]) -> None:
        self.vault = vault
        self._specs = specs
        self._cache: dict[str, Credential] = {}
        self.last_sync: float | None = None
        self.cache_hits = 0
        self.cache_misses = 0
        self.stale_serves = 0
        self.invalid_records = 0  # records skipped by a sync because they do not parse
        # KV's created_time of each cached record's metadata: a record deleted and created
        # again restarts at version 1, so the version alone cannot tell it from the old one.
        self._born: dict[str, str | None] = {}

    # -- the proxy's side: memory only -----------------------------------------------------

    @property
    def cached_count(self) -> int:
        return len(self._cache)

    def cached(self, name: str) -> Credential | None:
        cred = self._cache.get(name)
        if cred is None:
            self.cache_misses += 1
        else:
            self.cache_hits += 1
        return cred

    def peek(self, name: str) -> Credential | None:
        """The cached credential, not counted as a lookup (for housekeeping, not requests)."""
        return self._cache.get(name)

    async def get(self, name: str) -> Credential | None:
        """Cache first; on a miss read and decrypt once (the first request after start)."""
        cred = self.cached(name)
        if cred is not None:
            return cred
        found = await self.vault.kv_read(f"{FOLDER}/{name}")
        if found is None:
            return None
        cred = await self._decrypt(name, *found)
        self._remember(cred)
        return cred

    def _remember(self, cred: Credential, replace_newer: bool = False) -> None:
        """Cache ``cred`` unless a newer version is cached (``replace_newer``: the record may
        have been deleted and created again, whose versions start over at 1)."""
        current = self._cache.get(cred.name)
        if current is None or current.version <= cred.version or replace_newer:
            if current is not None:
                SECRETS.discard(current.secrets.values())
            self._cache[cred.name] = cred
            SECRETS.add(cred.secrets.values())

    def _forget(self, name: str) -> None:
        self._born.pop(name, None)
        gone = self._cache.pop(name, None)
        if gone is not None:
            SECRETS.discard(gone.secrets.values())

    async def _decrypt(self, name: str, raw: dict[str, Any], version: int) -> Credential:
        record = CredentialRecord.model_validate(raw)
        names = sorted(record.secrets)
        plain = await self.vault.decrypt([record.secrets[n].ciphertext for n in names])
        return Credential(
            name=name,
            upstream=record.upstream,
            scheme=record.scheme,
            environment=record.environment,
            enabled=record.enabled,
            fields=dict(record.fields),
            secrets=dict(zip(names, plain, strict=True)),
            provider_data=dict(record.provider_data),
            version=version,
            created_at=parse_iso(record.created_at),
            updated_at=parse_iso(record.updated_at),
        )

    # -- the admin's side ------------------------------------------------------------------

    async def read(self, name: str) -> tuple[CredentialRecord, int]:
        found = await self.vault.kv_read(f"{FOLDER}/{name}")
        if found is None:
            raise SidecarError("SC2001", f"Credential {name!r} not found")
        return CredentialRecord.model_validate(found[0]), found[1]

    async def names(self) -> list[str]:
        return sorted(k for k in await self.vault.kv_list(FOLDER) if not k.endswith("/"))

    async def put(
        self,
        name: str,
        upstream: str,
        environment: str,
        fields: Mapping[str, Any],
        provider_data: Mapping[str, Any],
        if_match: int | None = None,
        cred_type: str | None = None,
    ) -> tuple[CredentialView, bool]:
        """Create or replace; returns (public view, created). Verify *before* calling this."""
        spec = self._specs(upstream)
        public, secret = spec.check(fields)
        no_private_key({"provider_data": provider_data})
        current = await self.vault.kv_read(f"{FOLDER}/{name}")
        version = current[1] if current else 0
        if if_match is not None and if_match != version:
            raise SidecarError("SC2003")
        names = sorted(secret)
        values = [secret[n] for n in names]
        ciphertexts, digests = await asyncio.gather(
            self.vault.encrypt(values), self.vault.hmac(values)
        )
        stamp = now_iso()
        created_at: str = current[0]["created_at"] if current else stamp
        enabled = True if current is None else bool(current[0].get("enabled", True))
        record = CredentialRecord(
            upstream=upstream,
            scheme=spec.scheme,
            environment=environment,
            enabled=enabled,
            fields=public,
            secrets={
                n: SealedSecret(ciphertext=c, hmac=d)
                for n, c, d in zip(names, ciphertexts, digests, strict=True)
            },
            provider_data=dict(provider_data),
            type=cred_type,
            created_at=created_at,
            updated_at=stamp,
        )
        new_version = await self.vault.kv_write(f"{FOLDER}/{name}", record.to_kv(), cas=version)
        cred = Credential(
            name=name,
            upstream=upstream,
            scheme=spec.scheme,
            environment=environment,
            enabled=enabled,
            fields=public,
            secrets=secret,
            provider_data=dict(provider_data),
            version=new_version,
            created_at=parse_iso(created_at),
            updated_at=parse_iso(stamp),
        )
        self._remember(cred)
        log.info("credential_saved", name=name, upstream=upstream, version=new_version)
        return describe(name, record, new_version), current is None

    async def patch(
        self, name: str, changes: Mapping[str, Any], if_match: int | None = None
    ) -> CredentialView:
        """Change non-secret metadata (enabled, public fields, provider_data) with CAS."""
        record, version = await self.read(name)
        if if_match is not None and if_match != version:
            raise SidecarError("SC2003")
        no_private_key({k: changes[k] for k in ("fields", "provider_data") if k in changes})
        update: dict[str, Any] = {"updated_at": now_iso()}
        if "fields" in changes:
            spec = self._specs(record.upstream)
            bad = [k for k in changes["fields"] if k not in spec.public]
            if bad:
                raise SidecarError("SC1002", f"fields.{bad[0]}: not a public field (use PUT)")
            update["fields"] = {**record.fields, **changes["fields"]}
        for key in ("enabled", "provider_data"):
            if key in changes:
                update[key] = changes[key]
        record = CredentialRecord.model_validate({**record.model_dump(), **update})
        new_version = await self.vault.kv_write(f"{FOLDER}/{name}", record.to_kv(), cas=version)
        cached = self._cache.get(name)
        if cached is not None and cached.version == version:
            self._remember(
                replace(
                    cached,
                    enabled=record.enabled,
                    fields=dict(record.fields),
                    provider_data=dict(record.provider_data),
                    version=new_version,
                    updated_at=parse_iso(record.updated_at),
                )
            )
        else:
            self._forget(name)
        log.info("credential_patched", name=name, version=new_version, keys=sorted(changes))
        return describe(name, record, new_version)

    async def delete(self, name: str) -> None:
        await self.read(name)
        await self.vault.kv_delete(f"{FOLDER}/{name}")
        self._forget(name)
        log.info("credential_deleted", name=name)

    async def verify_secret(self, name: str, field: str, value: str) -> bool:
        """Compare a supplied secret with the stored one via transit HMAC; no decryption."""
        record, _ = await self.read(name)
        stored = record.secrets.get(field)
        if stored is None:
            raise SidecarError("SC1002", f"{field}: not a secret field of {name!r}")
        (digest,) = await self.vault.hmac([value], key_version=hmac_key_version(stored.hmac))
        return hmac.compare_digest(digest.encode(), stored.hmac.encode())

    async def versions(self, name: str) -> list[dict[str, Any]]:
        meta = await self.vault.kv_metadata(f"{FOLDER}/{name}")
        if meta is None:
            raise SidecarError("SC2001", f"Credential {name!r} not found")
        return [
            {
                "version": int(v),
                "created_at": info.get("created_time"),
                "deleted_at": info.get("deletion_time") or None,
                "destroyed": bool(info.get("destroyed")),
                "current": int(v) == int(meta.get("current_version", 0)),
            }
            for v, info in sorted(meta.get("versions", {}).items(), key=lambda kv: int(kv[0]))
        ]

    # -- keeping the cache true ------------------------------------------------------------

    async def sync(self) -> int:
        """Re-read records whose KV version changed (another replica wrote); drop deleted ones."""
        names = set(await self.names())
        changed = 0
        for name in list(self._cache):
            if name not in names:
                self._forget(name)
                changed += 1
        for name in names:
            meta = await self.vault.kv_metadata(f"{FOLDER}/{name}")
            cached = self._cache.get(name)
            if meta is None or (
                cached
                and cached.version == int(meta["current_version"])
                and self._born.get(name) == meta.get("created_time")
            ):
                continue
            found = await self.vault.kv_read(f"{FOLDER}/{name}")
            if found is not None:
                born = meta.get("created_time")
                again = cached if self._born.get(name) != born else None
                changed += await self._load(name, *found, again=again)
                self._born[name] = born
        self.last_sync = time.monotonic()
        return changed

    async def _load(
        self, name: str, raw: dict[str, Any], version: int, again: Credential | None = None
    ) -> int:
        """Cache one record; a malformed one is skipped (and dropped) so the others still sync.

        Why: one record that does not parse (written by hand, or by a newer sidecar) must not
        stop every other credential's updates and, past ``max_stale``, all proxying.
        ``again``: the cached credential when the record may have been created again; it is
        replaced even by a lower version, unless a save of ours replaced it meanwhile.
        """
        try:
            cred = await self._decrypt(name, raw, version)
            created_again = again is not None and self._cache.get(name) is again
            self._remember(cred, replace_newer=created_again)
        except ValidationError as exc:
            self.invalid_records += 1
            errors = exc.error_count()
            log.error("credential_record_invalid", name=name, version=version, errors=errors)
            self._forget(name)
            return 0
        return 1
