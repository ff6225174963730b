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
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import hvac
import hvac.exceptions as hv
import requests

from sidecar.config import VaultConfig
from sidecar.errors import SidecarError, VaultUnavailable
from sidecar.logging import get_logger
from sidecar.vault.session import Session, unreachable

log = get_logger("sidecar.vault")
T = TypeVar("T")

CAS_MISMATCH = "check-and-set parameter did not match"


def _map_error(exc: Exception, what: str) -> SidecarError:
    """The one table from Vault's answer to a sidecar error (403s are classified by the session)."""
    if unreachable(exc):
        return VaultUnavailable(f"Vault is unavailable ({what})")
    if isinstance(exc, hv.InvalidRequest) and CAS_MISMATCH in str(exc):
        return SidecarError("SC2002")
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
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="vault")
        self.session = Session(cfg, self._client, self._run)
        self.write_index: str | None = None
        self._client.adapter.session.hooks["response"].append(self._remember_index)

    def _remember_index(self, response: requests.Response, *_args: Any, **_kwargs: Any) -> None:
        """Read-your-writes: every later request carries the index of this sidecar's last write.

        OpenBao standbys serve reads (and transit) from their own, possibly lagging, copy: a
        version read there and written check-and-set on the leader is a spurious 409, a
        transit key just created is "not found". With ``X-Vault-Index`` (from the last
        write's answer; hvac's JSON adapter drops response headers, so a ``requests``
        response hook takes it) and ``X-Vault-Inconsistent: forward-active-node``, a standby
        that has not applied that write forwards the request to the active node, and serves
        it itself once caught up. Other replicas' writes carry no index here: point
        ``vault.address`` at the active node (the ``vault-active`` Service) for those.
        """
        index = response.headers.get("X-Vault-Index")
        if index and response.request.method not in ("GET", "HEAD", "LIST"):
            self.write_index = index
            self._client.adapter.session.headers.update(
                {"X-Vault-Index": index, "X-Vault-Inconsistent": "forward-active-node"}
            )

    @property
    def authenticated(self) -> bool:
        return self.session.usable()

    # -- plumbing -------------------------------------------------------------------------

    async def _run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """One hvac call in Vault's own threads, counted; exceptions are hvac's."""
        self.requests += 1
        call = functools.partial(fn, *args, **kwargs)
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, call)
        except hv.InvalidPath:
            raise  # a 404 is an answer (nothing there), not an error
        except Exception:
            self.errors += 1
            raise

    async def _call(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Like ``_call_or_missing``, but a 404 is an error."""
        result = await self._call_or_missing(what, fn, *args, **kwargs)
        if result is None:
            raise SidecarError("SC3003", f"Vault has nothing at {what}")
        return result

    async def _call_or_missing(
        self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any
    ) -> T | None:
        """Run one hvac call; ``None`` on 404. A 403 asks the session whose fault it was.

        A dead token makes the session log in again, at most as often as its back-off allows
        (never a reflex per request: that is how a fleet locks its role_id out), then the call
        is tried once more.
        """
        for attempt in range(2):
            await self.session.ensure()
            try:
                return await self._run(fn, *args, **kwargs)
            except hv.InvalidPath:
                return None
            except hv.Forbidden:
                denial = await self.session.classify_denial(what)
                if denial.code != "SC3005" or attempt or not self.session.login_due():
                    raise denial from None
            except (hv.VaultError, requests.RequestException) as exc:
                raise _map_error(exc, what) from None
        raise AssertionError("unreachable")

    def close(self) -> None:
        """Stop the worker threads; calls still hanging on a dead Vault end at their timeout."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    # -- auth (owned by the session) ------------------------------------------------------

    async def login(self) -> None:
        await self.session.login(force=True)

    async def check_token(self) -> bool:
        """Readiness: is the current token still accepted?"""
        return await self.session.check()

    async def maintain(
        self, stop: asyncio.Event, report: Callable[[str, BaseException], None]
    ) -> None:
        """Background: whatever the session has due (login, renewal, check); survives anything."""
        while not stop.is_set():
            try:
                await self.session.tick()
            except Exception as exc:  # an outage or a bug: report, the loop must go on
                report("vault-session", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=max(0.05, self.session.next_due()))

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
            if exc.code != "SC3006":
                raise
            found = None
        if found is not None:
            return
        if not self.cfg.create_transit_key:
            raise SidecarError("SC3002", f"transit key {mount}/keys/{key} is missing or unreadable")
        what = f"create {mount}/keys/{key} (needs 'update' on {mount}/keys/{key})"
        try:
            await self._call(
                what,
                self._client.secrets.transit.create_key,
                name=key,
                key_type="aes256-gcm96",
                mount_point=mount,
            )
        except SidecarError as exc:
            if exc.code != "SC3006":
                raise
            raise SidecarError("SC3002", f"Vault denied {what}") from None
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
