"""Async facade over hvac: login, renewal, KV v2 and transit.

hvac is synchronous, so every call runs in a worker thread here and nowhere else; the event
loop never blocks on Vault. The threads are Vault's own small pool rather than the loop's
default executor: during an outage each call hangs for ``vault.timeout``, and a saturated
default executor would stall DNS look-ups on the proxy's path. One table maps Vault's answers
to sidecar errors, and messages name the path and the missing capability, never a value.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import os
import random
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import hvac
import hvac.exceptions as hv
import requests

from sidecar.config import VaultAuth, VaultConfig
from sidecar.errors import SidecarError, VaultUnavailable
from sidecar.logging import get_logger

log = get_logger("sidecar.vault")
T = TypeVar("T")

CAS_MISMATCH = "check-and-set parameter did not match"


def _map_error(exc: Exception, what: str) -> SidecarError:
    """The one table from Vault's answer to a sidecar error."""
    if isinstance(exc, (requests.ConnectionError, requests.Timeout, hv.VaultDown)):
        return VaultUnavailable(f"Vault is unavailable ({what})")
    if isinstance(exc, hv.InvalidRequest) and CAS_MISMATCH in str(exc):
        return SidecarError("SC2002")
    if isinstance(exc, hv.Forbidden):
        return SidecarError("SC3002", f"Vault denied {what}: the token's policy must allow it")
    if isinstance(exc, hv.Unauthorized):
        return SidecarError("SC3004")
    return SidecarError("SC3003", f"Vault error on {what} ({type(exc).__name__})")


class Vault:
    """One Vault client per sidecar; counts its requests so tests can prove zero on hot paths."""

    def __init__(self, cfg: VaultConfig) -> None:
        self.cfg = cfg
        verify: bool | str = str(cfg.ca_bundle) if cfg.ca_bundle else True
        self._client = hvac.Client(url=cfg.address, timeout=cfg.timeout, verify=verify)
        self.requests = 0
        self.errors = 0
        self.authenticated = False
        self._renew_at: float | None = None
        self._login_ttl = 0.0
        self._login_lock = asyncio.Lock()
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="vault")

    # -- plumbing -------------------------------------------------------------------------

    async def _call(
        self, what: str, fn: Callable[..., T], *args: Any, may_relogin: bool = True, **kwargs: Any
    ) -> T:
        """Like ``_call_or_missing``, but a 404 is an error. Auth calls pass may_relogin=False."""
        result = await self._call_or_missing(what, fn, *args, may_relogin=may_relogin, **kwargs)
        if result is None:
            raise SidecarError("SC3003", f"Vault has nothing at {what}")
        return result

    async def _call_or_missing(
        self, what: str, fn: Callable[..., T], *args: Any, may_relogin: bool = True, **kwargs: Any
    ) -> T | None:
        """Run one hvac call in a thread; ``None`` when Vault answers 404."""
        for attempt in range(2 if may_relogin else 1):
            self.requests += 1
            try:
                call = functools.partial(fn, *args, **kwargs)
                result = await asyncio.get_running_loop().run_in_executor(self._pool, call)
            except hv.InvalidPath:
                return None
            except (hv.VaultError, requests.RequestException) as exc:
                self.errors += 1
                if (
                    isinstance(exc, hv.Forbidden)
                    and may_relogin
                    and attempt == 0
                    and await self._relogin()
                ):
                    continue
                raise _map_error(exc, what) from None
            return result
        raise AssertionError("unreachable")

    async def _relogin(self) -> bool:
        """A 403 may be an expired token: log in again once if the method can."""
        if self.cfg.auth.method == "token":
            return False
        try:
            await self.login()
        except SidecarError:
            return False
        return True

    def close(self) -> None:
        """Stop the worker threads; calls still hanging on a dead Vault end at their timeout."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    # -- auth -----------------------------------------------------------------------------

    async def login(self) -> None:
        async with self._login_lock:
            auth = self.cfg.auth
            ttl = await self._login(auth)
            self._login_ttl = ttl
            self.authenticated = True
            self._renew_at = time.monotonic() + ttl * self.cfg.renew_fraction if ttl else None
            log.info("vault_authenticated", method=auth.method, ttl=ttl)

    async def _login(self, auth: VaultAuth) -> float:
        client = self._client
        if auth.method == "token":
            client.token = _token(auth)
            data = await self._call(
                "auth/token/lookup-self", client.auth.token.lookup_self, may_relogin=False
            )
            return float(data["data"].get("ttl") or 0)
        if auth.method == "approle":
            secret_id = _read_secret(auth.secret_id, auth.secret_id_file, "secret_id")
            resp = await self._call(
                "approle login",
                client.auth.approle.login,
                may_relogin=False,
                role_id=auth.role_id,
                secret_id=secret_id,
                mount_point=auth.mount or "approle",
                use_token=True,
            )
        else:
            jwt = auth.jwt_path.read_text().strip()
            resp = await self._call(
                "kubernetes login",
                client.auth.kubernetes.login,
                may_relogin=False,
                role=auth.role,
                jwt=jwt,
                mount_point=auth.mount or "kubernetes",
                use_token=True,
            )
        return float(resp["auth"].get("lease_duration") or 0)

    async def check_token(self) -> bool:
        """Readiness: is the current token still accepted?"""
        try:
            await self._call(
                "auth/token/lookup-self", self._client.auth.token.lookup_self, may_relogin=False
            )
        except SidecarError:
            self.authenticated = False
            return False
        self.authenticated = True
        return True

    async def maintain(self, stop: asyncio.Event) -> None:
        """Background: renew before expiry; on failure log in again with backoff and jitter."""
        delay = 1.0
        while not stop.is_set():
            wait = 5.0 if self._renew_at is None else max(0.0, self._renew_at - time.monotonic())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=min(wait, 30.0))
            if stop.is_set() or (self._renew_at is None and self.authenticated):
                continue
            if self._renew_at is not None and time.monotonic() < self._renew_at:
                continue
            try:
                await self._renew_or_login()
                delay = 1.0
            except SidecarError as exc:
                self.authenticated = False
                log.warning("vault_auth_retry", code=exc.code, retry_in=round(delay, 1))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=delay * random.uniform(0.5, 1.5))
                delay = min(delay * 2, 60.0)

    async def _renew_or_login(self) -> None:
        """Renew; once the renewed TTL is cut short (max TTL ahead), log in afresh instead."""
        try:
            resp = await self._call(
                "auth/token/renew-self", self._client.auth.token.renew_self, may_relogin=False
            )
            ttl = float(resp["auth"].get("lease_duration") or 0)
        except SidecarError:
            if self.cfg.auth.method == "token":
                raise
            await self.login()
            return
        capped = ttl < self._login_ttl * (1 - self.cfg.renew_fraction)
        if capped and self.cfg.auth.method != "token":
            log.info("vault_token_near_max_ttl", ttl=ttl)
            await self.login()
            return
        self._renew_at = time.monotonic() + ttl * self.cfg.renew_fraction if ttl else None
        self.authenticated = True
        log.info("vault_token_renewed", ttl=ttl)

    # -- KV v2 ----------------------------------------------------------------------------

    def _path(self, name: str) -> str:
        return f"{self.cfg.prefix.strip('/')}/{name}"

    async def kv_read(self, name: str) -> tuple[dict[str, Any], int] | None:
        resp = await self._call_or_missing(
            f"read {self.cfg.kv_mount}/data/{self._path(name)}",
            self._client.secrets.kv.v2.read_secret_version,
            path=self._path(name),
            mount_point=self.cfg.kv_mount,
            raise_on_deleted_version=True,
        )
        if resp is None:
            return None
        return resp["data"]["data"], int(resp["data"]["metadata"]["version"])

    async def kv_write(self, name: str, data: dict[str, Any], cas: int) -> int:
        """Write with check-and-set: ``cas=0`` creates only; a mismatch raises SC2002."""
        resp = await self._call(
            f"write {self.cfg.kv_mount}/data/{self._path(name)}",
            self._client.secrets.kv.v2.create_or_update_secret,
            path=self._path(name),
            secret=data,
            cas=cas,
            mount_point=self.cfg.kv_mount,
        )
        return int(resp["data"]["version"])

    async def kv_list(self, folder: str) -> list[str]:
        resp = await self._call_or_missing(
            f"list {self.cfg.kv_mount}/metadata/{self._path(folder)}",
            self._client.secrets.kv.v2.list_secrets,
            path=self._path(folder),
            mount_point=self.cfg.kv_mount,
        )
        if resp is None:
            return []
        return [str(k) for k in resp["data"]["keys"]]

    async def kv_metadata(self, name: str) -> dict[str, Any] | None:
        resp = await self._call_or_missing(
            f"read {self.cfg.kv_mount}/metadata/{self._path(name)}",
            self._client.secrets.kv.v2.read_secret_metadata,
            path=self._path(name),
            mount_point=self.cfg.kv_mount,
        )
        if resp is None:
            return None
        return dict(resp["data"])

    async def kv_delete(self, name: str) -> None:
        await self._call(
            f"delete {self.cfg.kv_mount}/metadata/{self._path(name)}",
            self._client.secrets.kv.v2.delete_metadata_and_all_versions,
            path=self._path(name),
            mount_point=self.cfg.kv_mount,
        )

    # -- transit --------------------------------------------------------------------------

    async def ensure_transit_key(self) -> None:
        """Create the key if policy allows; otherwise say exactly what is missing."""
        mount, key = self.cfg.transit_mount, self.cfg.transit_key
        try:
            found = await self._call_or_missing(
                f"read {mount}/keys/{key}",
                self._client.secrets.transit.read_key,
                name=key,
                mount_point=mount,
            )
        except SidecarError as exc:
            if exc.code != "SC3002":
                raise
            found = None
        if found is not None:
            return
        if not self.cfg.create_transit_key:
            raise SidecarError("SC3002", f"transit key {mount}/keys/{key} is missing or unreadable")
        await self._call(
            f"create {mount}/keys/{key} (needs 'update' on {mount}/keys/{key})",
            self._client.secrets.transit.create_key,
            name=key,
            key_type="aes256-gcm96",
            mount_point=mount,
        )
        log.info("transit_key_created", mount=mount, key=key)

    async def _transit_batch(
        self, op: str, items: list[dict[str, Any]], **params: Any
    ) -> list[dict[str, Any]]:
        url = f"/v1/{self.cfg.transit_mount}/{op}/{self.cfg.transit_key}"
        resp = await self._call(
            f"{self.cfg.transit_mount}/{op}/{self.cfg.transit_key}",
            self._client.adapter.post,
            url,
            json={"batch_input": items, **params},
        )
        results: list[dict[str, Any]] = resp["data"]["batch_results"]
        if any(r.get("error") for r in results):
            raise SidecarError("SC3003", f"transit {op} failed for an item")
        return results

    async def encrypt(self, plaintexts: list[str]) -> list[str]:
        items = [{"plaintext": _b64(p)} for p in plaintexts]
        return [r["ciphertext"] for r in await self._transit_batch("encrypt", items)]

    async def decrypt(self, ciphertexts: list[str]) -> list[str]:
        items = [{"ciphertext": c} for c in ciphertexts]
        results = await self._transit_batch("decrypt", items)
        return [base64.b64decode(r["plaintext"]).decode() for r in results]

    async def hmac(self, values: list[str], key_version: int | None = None) -> list[str]:
        """Transit HMAC (sha2-256); ``key_version`` pins the version a stored digest used."""
        items: list[dict[str, Any]] = [{"input": _b64(v)} for v in values]
        params = {} if key_version is None else {"key_version": key_version}
        return [r["hmac"] for r in await self._transit_batch("hmac", items, **params)]


class CallerVault(Vault):
    """The admin API's Vault for one request: KV with the *caller's* token, transit with ours.

    KV reads, writes, deletes and ``sys/capabilities-self`` carry the token the caller sent in
    ``X-Vault-Token``, through a short-lived hvac client of their own, so Vault's policies decide
    who may change which credential and Vault's audit log names the person. Transit encrypt and
    HMAC stay with the admin role's own session (callers need no transit rights, and the admin
    role's policy needs no KV rights). Calls run in the owner's thread pool; a 403 is the
    caller's (SC6001) and never makes the sidecar log in again.
    """

    def __init__(self, owner: Vault, token: str) -> None:  # not a session: no login, no renewal
        self.cfg = owner.cfg
        self.owner = owner
        verify: bool | str = str(owner.cfg.ca_bundle) if owner.cfg.ca_bundle else True
        self._client = hvac.Client(
            url=owner.cfg.address, token=token, timeout=owner.cfg.timeout, verify=verify
        )
        self._pool = owner._pool
        self.requests = 0
        self.errors = 0

    async def _call_or_missing(
        self, what: str, fn: Callable[..., T], *args: Any, may_relogin: bool = True, **kwargs: Any
    ) -> T | None:
        """One hvac call with the caller's token in the owner's threads; ``None`` on 404.

        Self-contained on purpose (no re-login, no session): a 403 here is the caller's answer.
        """
        self.requests += 1
        call = functools.partial(fn, *args, **kwargs)
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, call)
        except hv.InvalidPath:
            return None
        except (hv.Forbidden, hv.Unauthorized):
            self.errors += 1
            raise SidecarError("SC6001", f"Vault denied {what} to your token") from None
        except (hv.VaultError, requests.RequestException) as exc:
            self.errors += 1
            raise _map_error(exc, what) from None

    async def capabilities(self, paths: list[str]) -> dict[str, set[str]]:
        """``sys/capabilities-self``: what the caller's token may do on each full path."""
        try:
            resp = await self._call(
                "sys/capabilities-self", self._client.sys.get_capabilities, paths=paths
            )
        except SidecarError as exc:
            if exc.code == "SC6001":  # Vault answers 403 to a token it does not know
                raise SidecarError("SC1010") from None
            raise
        data = resp.get("data") or resp
        return {p: set(data.get(p) or ()) for p in paths}

    def kv_data_path(self, name: str) -> str:
        return f"{self.cfg.kv_mount}/data/{self._path(name)}"

    def kv_metadata_path(self, name: str) -> str:
        return f"{self.cfg.kv_mount}/metadata/{self._path(name)}"

    async def encrypt(self, plaintexts: list[str]) -> list[str]:
        return await self.owner.encrypt(plaintexts)

    async def decrypt(self, ciphertexts: list[str]) -> list[str]:
        return await self.owner.decrypt(ciphertexts)

    async def hmac(self, values: list[str], key_version: int | None = None) -> list[str]:
        return await self.owner.hmac(values, key_version=key_version)

    def close(self) -> None:
        """Drop the caller's connections; the pool is the owner's and stays."""
        self._client.adapter.close()


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def hmac_key_version(digest: str) -> int | None:
    """``vault:v3:...`` -> 3, so verification recomputes with the version that made it."""
    parts = digest.split(":")
    if len(parts) >= 3 and parts[1].startswith("v") and parts[1][1:].isdigit():
        return int(parts[1][1:])
    return None


def _read_secret(value: Any, path: Any, what: str) -> str:
    if path is not None:
        return str(path.read_text().strip())
    if value is not None:
        return str(value.get_secret_value())
    raise SidecarError("SC3004", f"vault.auth: no {what} configured")


def _token(auth: VaultAuth) -> str:
    if auth.token is not None or auth.token_file is not None:
        return _read_secret(auth.token, auth.token_file, "token")
    if os.environ.get("VAULT_TOKEN") or os.environ.get("BAO_TOKEN"):
        return os.environ.get("VAULT_TOKEN") or os.environ["BAO_TOKEN"]
    raise SidecarError("SC3004", "vault.auth: no token (token, token_file, VAULT_TOKEN)")
