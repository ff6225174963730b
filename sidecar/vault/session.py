"""The Vault token's one owner: login, renewal, checks and re-login, for every auth method.

Why one object: OpenBao locks a role_id out after 5 failed logins (per role_id, across every
replica sharing it), so a re-login must never be a reflex of whichever call saw a 403. Here a
refused login waits ``vault.login_retry`` seconds (15 min by default, plus up to half again as
jitter) before the same credential is tried again, unless the credential's file
(``token_file``, ``secret_id_file``, the Kubernetes JWT) changed: a fresh credential is tried
at once. Those files are re-read before every login, so rotation needs no restart. An
unreachable Vault is not a refused login (it cannot count towards a lockout) and is retried
with full-jitter back-off capped at ``vault.backoff_max``. ``valid`` is the verdict of the last
*successful* login, check or renewal, kept until the token's TTL runs out: a failed renewal
inside a failover does not turn the sidecar unready while the token still works.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import hvac
import hvac.exceptions as hv
import requests

from sidecar.config import VaultConfig
from sidecar.errors import SidecarError, VaultUnavailable
from sidecar.logging import get_logger

log = get_logger("sidecar.vault")
Runner = Callable[..., Awaitable[Any]]
_UNREACHABLE = (requests.ConnectionError, requests.Timeout, hv.VaultDown, hv.BadGateway)
_TRANSIENT = (hv.InternalServerError, hv.RateLimitExceeded, hv.UnexpectedError)


def unreachable(exc: BaseException) -> bool:
    return isinstance(exc, _UNREACHABLE)


def full_jitter(attempt: int, cap: float, base: float = 0.25) -> float:
    """AWS's "full jitter": uniform in [0, min(cap, base * 2**attempt)]."""
    return random.uniform(0, min(cap, base * 2**attempt))


class Session:
    """Holds the token's state; ``tick`` is the one step the maintain loop repeats."""

    def __init__(self, cfg: VaultConfig, client: hvac.Client, run: Runner) -> None:
        self.cfg = cfg
        self._client = client
        self._run = run
        self.valid = False
        self.expires_at: float | None = None  # monotonic; None: the token has no TTL
        self.renew_at: float | None = None
        self.check_at = 0.0
        self.last_ok: float | None = None
        self.last_error: str | None = None
        self.logins = self.failed_logins = self.renewals = 0
        self._login_ttl = 0.0
        self._next_login = 0.0
        self._unreachable = 0
        self._used: bytes | None = None  # fingerprint of the credential of the last attempt
        self._lock = asyncio.Lock()

    # -- the credential source ------------------------------------------------------------

    def source(self) -> Path | None:
        auth = self.cfg.auth
        if auth.method == "token":
            return auth.token_file
        if auth.method == "approle":
            return auth.secret_id_file
        return auth.jwt_path

    def _read_credential(self) -> str:
        """The login credential, read afresh; a missing file is SC3004 (retried, not fatal)."""
        auth, path = self.cfg.auth, self.source()
        if path is not None:
            try:
                return path.read_text().strip()
            except OSError as exc:
                raise SidecarError(
                    "SC3004", f"vault.auth: cannot read {path.name} ({exc.strerror})"
                ) from None
        value = auth.token if auth.method == "token" else auth.secret_id
        if value is not None:
            return value.get_secret_value()
        env = os.environ.get("VAULT_TOKEN") or os.environ.get("BAO_TOKEN")
        if auth.method == "token" and env:
            return env
        raise SidecarError("SC3004", f"vault.auth: no credential configured for {auth.method}")

    def _fingerprint(self) -> bytes | None:
        path = self.source()
        try:
            return hashlib.sha256(path.read_bytes()).digest() if path else None
        except OSError:
            return None

    def source_changed(self) -> bool:
        """The credential file now differs from the one last tried (rotation, or it appeared)."""
        found = self._fingerprint()
        return found is not None and found != self._used

    # -- state ----------------------------------------------------------------------------

    def usable(self) -> bool:
        """Valid by the last successful call and, if the token has a TTL, not past it."""
        if self.valid and self.expires_at is not None and time.monotonic() >= self.expires_at:
            self.valid = False
            log.warning("vault_token_expired")
        return self.valid

    def ttl(self) -> float | None:
        return None if self.expires_at is None else max(0.0, self.expires_at - time.monotonic())

    def login_due(self) -> bool:
        return time.monotonic() >= self._next_login or self.source_changed()

    def _ok(self, ttl: float) -> None:
        now = time.monotonic()
        self.valid, self.last_ok, self._unreachable = True, now, 0
        self.expires_at = now + ttl if ttl else None
        self.check_at = now + self.cfg.check_interval

    def _failed(self, code: str) -> None:
        self.last_error = code

    # -- login ----------------------------------------------------------------------------

    async def ensure(self) -> None:
        """Log in if the token is not usable and a login is due; otherwise fail fast."""
        if not self.usable():
            await self.login()

    async def login(self, force: bool = False) -> None:
        """Log in with the credential read now; a failure leaves a still-valid token in use."""
        async with self._lock:
            if not force and self.usable():
                return  # someone else logged in while this call waited
            if not force and not self.login_due():
                code = self.last_error if self.last_error in _WAIT_CODES else "SC3007"
                raise SidecarError(code, _WAITING.get(code))
            self._used = self._fingerprint()
            try:
                ttl = await self._login(self._read_credential())
            except SidecarError as exc:
                self._after_failed_login(exc)
                raise
            self._login_ttl = ttl
            self.logins += 1
            self._ok(ttl)
            self.renew_at = time.monotonic() + ttl * self.cfg.renew_fraction if ttl else None
            log.info("vault_authenticated", method=self.cfg.auth.method, ttl=ttl)

    def _after_failed_login(self, exc: SidecarError) -> None:
        self._failed(exc.code)
        if exc.code == "SC3001":
            self._unreachable += 1
            wait = full_jitter(self._unreachable, self.cfg.backoff_max)
        elif exc.code == "SC3004":  # no credential yet: nothing reached Vault, poll the file
            wait = 1.0
        else:
            self.failed_logins += 1
            wait = random.uniform(1.0, 1.5) * self.cfg.login_retry
        self._next_login = time.monotonic() + wait
        log.warning("vault_login_failed", code=exc.code, retry_in=round(wait, 1))

    async def _login(self, credential: str) -> float:
        auth, client = self.cfg.auth, self._client
        if auth.method == "token":
            client.token = credential
            data = await self._auth_call("token lookup", client.auth.token.lookup_self)
            return float(data["data"].get("ttl") or 0)
        if auth.method == "approle":
            call: Callable[..., Any] = client.auth.approle.login
            kwargs: dict[str, Any] = {"role_id": auth.role_id, "secret_id": credential}
        else:
            call, kwargs = client.auth.kubernetes.login, {"role": auth.role, "jwt": credential}
        resp = await self._auth_call(
            f"{auth.method} login",
            call,
            mount_point=auth.mount or auth.method,
            use_token=True,
            **kwargs,
        )
        return float(resp["auth"].get("lease_duration") or 0)

    async def _auth_call(self, what: str, fn: Callable[..., Any], **kwargs: Any) -> Any:
        """A login, lookup or renewal: refused is SC3005 (token) or SC3007 (login), never SC3002."""
        try:
            return await self._run(fn, **kwargs)
        except (hv.VaultError, requests.RequestException) as exc:
            if unreachable(exc) or isinstance(exc, _TRANSIENT):  # not a refusal: no lockout
                raise VaultUnavailable(f"Vault is unavailable ({what})") from None
            token = self.cfg.auth.method == "token" or "login" not in what
            code = "SC3005" if token else "SC3007"
            raise SidecarError(code, f"Vault refused the {what} ({type(exc).__name__})") from None

    # -- checks and renewal ---------------------------------------------------------------

    async def check(self) -> bool:
        """lookup-self: is the current token still accepted? Unreachable keeps the old verdict."""
        try:
            data = await self._auth_call("token lookup", self._client.auth.token.lookup_self)
        except SidecarError as exc:
            self._failed(exc.code)
            if exc.code == "SC3001":
                self.check_at = time.monotonic() + full_jitter(3, self.cfg.backoff_max)
                return self.usable()
            self.valid = False
            self._next_login = 0.0 if self.cfg.auth.method != "token" else self._next_login
            log.warning("vault_token_rejected", code=exc.code)
            return False
        self._ok(float(data["data"].get("ttl") or 0))
        return True

    async def classify_denial(self, what: str) -> SidecarError:
        """A 403 on a data call: a dead token (SC3005) or a policy that says no (SC3006)."""
        if await self.check():
            return SidecarError("SC3006", f"Vault policy denies {what}")
        if self.last_error == "SC3001":
            return VaultUnavailable(f"Vault is unavailable ({what})")
        return SidecarError("SC3005", f"Vault rejected the sidecar's token on {what}")

    async def renew(self) -> None:
        """Renew; near the max TTL log in afresh. A renewal that fails keeps the token valid."""
        try:
            resp = await self._auth_call("token renewal", self._client.auth.token.renew_self)
        except SidecarError as exc:
            self._failed(exc.code)
            if exc.code == "SC3001":
                self.renew_at = time.monotonic() + full_jitter(3, self.cfg.backoff_max)
                log.warning("vault_renewal_failed", code=exc.code, ttl_left=self.ttl())
                return
            await self.check()  # refused: either the token is gone or it is not renewable
            self.renew_at = None
            return
        ttl = float(resp["auth"].get("lease_duration") or 0)
        self.renewals += 1
        self._ok(ttl)
        self.renew_at = time.monotonic() + ttl * self.cfg.renew_fraction if ttl else None
        if (
            ttl < self._login_ttl * (1 - self.cfg.renew_fraction)
            and self.cfg.auth.method != "token"
        ):
            log.info("vault_token_near_max_ttl", ttl=ttl)
            try:
                await self.login(force=True)
            except SidecarError:
                self.renew_at = None  # keep the current token to its end; tick logs in again
            return
        log.info("vault_token_renewed", ttl=ttl)

    async def tick(self) -> None:
        """One maintenance step: rotate, log in, renew or check, whichever is due."""
        now = time.monotonic()
        if self.cfg.auth.method == "token" and self.valid and self.source_changed():
            self.valid = False  # the operator rotated the token: use the new one now
            self._next_login = 0.0
        if not self.usable():
            if self.login_due():
                await self.login()
            return
        if self.renew_at is not None and now >= self.renew_at:
            await self.renew()
        elif now >= self.check_at:
            await self.check()

    def next_due(self) -> float:
        """Seconds until ``tick`` has something to do (the file poll bounds it)."""
        now = time.monotonic()
        times = [self.check_at]
        if not self.valid:
            times.append(self._next_login)
        if self.renew_at is not None:
            times.append(self.renew_at)
        if self.expires_at is not None:
            times.append(self.expires_at)
        return max(0.0, min(min(times) - now, self.cfg.source_poll))

    def status(self) -> dict[str, Any]:
        ttl = self.ttl()
        return {
            "method": self.cfg.auth.method,
            "valid": self.usable(),
            "token_ttl": None if ttl is None else round(ttl, 1),
            "last_ok_age": None
            if self.last_ok is None
            else round(time.monotonic() - self.last_ok, 1),
            "last_error": self.last_error,
            "logins": self.logins,
            "failed_logins": self.failed_logins,
            "renewals": self.renewals,
            "next_login_in": None
            if self.valid
            else round(max(0.0, self._next_login - time.monotonic()), 1),
        }


_WAIT_CODES = frozenset({"SC3001", "SC3004", "SC3005", "SC3007"})
_WAITING = {
    "SC3005": "Vault rejected the sidecar's token; waiting for a new one (token_file)",
    "SC3007": "Vault refused the sidecar's login; waiting before the next attempt",
}
