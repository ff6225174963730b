"""Who may use the admin API, and with whose Vault rights each request runs.

Three ways in, checked in this order (``shared/DESIGN.md``, "Roles"):

1. ``X-Vault-Token``: the caller's own Vault token. The route's KV path is checked first with
   ``sys/capabilities-self`` (a clear SC6001 before anything is verified with the provider), and
   every KV read and write of the request is made *with that token* (``CallerVault``), so Vault's
   policies decide and Vault's audit log names the person. Transit stays with the admin role.
2. ``Authorization: Bearer <static admin token>`` (constant-time compare): the single-host option;
   the request runs with the admin role's own Vault session.
3. The Unix-socket listener: whoever can open the socket (mode 0600) is the operator.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Middleware

from sidecar.config import Config
from sidecar.errors import SidecarError
from sidecar.handlers.common import Handler, runtime
from sidecar.proxykeys.store import KeyStore
from sidecar.store import FOLDER, CredentialStore
from sidecar.vault import CallerVault

CALLER = web.RequestKey("caller_vault", CallerVault)
OPEN_PATHS = frozenset({"/healthz", "/readyz"})


@dataclass(frozen=True, slots=True)
class AdminAuth:
    """How one admin listener authenticates; ``required`` False only for in-process tests."""

    static_token: str | None = field(default=None, repr=False)
    vault_tokens: bool = True
    socket: bool = False
    required: bool = True

    @classmethod
    def from_config(cls, cfg: Config, *, socket: bool = False, required: bool = True) -> AdminAuth:
        token = static_token(cfg)
        return cls(token, cfg.admin.vault_tokens, socket, required or token is not None)

    def accepts_bearer(self, header: str) -> bool:
        """``Authorization: Bearer <static token>``, compared in constant time."""
        if self.static_token is None:
            return False
        return hmac.compare_digest(header.encode(), f"Bearer {self.static_token}".encode())

    @property
    def configured(self) -> bool:
        """Some way in exists other than "anyone who can connect" (TCP needs one)."""
        return self.socket or self.vault_tokens or self.static_token is not None


def static_token(cfg: Config) -> str | None:
    """``admin.token_file`` (read once, at start) or ``admin.token``; None when neither is set."""
    if cfg.admin.token_file is not None:
        try:
            return Path(cfg.admin.token_file).read_text().strip() or None
        except OSError as exc:  # named, never echoed: the path is config, the content a secret
            raise SidecarError(
                "SC6002", f"admin.token_file: cannot read ({exc.strerror})"
            ) from None
    if cfg.admin.token is not None and cfg.admin.token.get_secret_value():
        return cfg.admin.token.get_secret_value()
    return None


def admin_auth_middleware(auth: AdminAuth) -> Middleware:
    """No token is ever bound to a local of ``check``: its frame is in every handler traceback,
    and a console traceback may print locals."""

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in OPEN_PATHS:
            return await handler(request)
        vault = _caller_vault(request) if auth.vault_tokens else None
        if vault is not None:
            request[CALLER] = vault
            try:
                return await handler(request)
            finally:
                vault.close()
        if auth.accepts_bearer(request.headers.get("Authorization", "")):
            return await handler(request)
        if auth.socket or not auth.required:
            return await handler(request)
        raise SidecarError("SC1007")

    return check


def _caller_vault(request: web.Request) -> CallerVault | None:
    token = request.headers.get("X-Vault-Token")
    return CallerVault(runtime(request).vault, token) if token else None


def caller(request: web.Request) -> CallerVault | None:
    return request.get(CALLER)


def credential_store(request: web.Request) -> CredentialStore:
    """The caller's view when they sent a Vault token; else the runtime's own (cache included)."""
    rt = runtime(request)
    found = caller(request)
    return rt.store if found is None else CredentialStore(found, rt.field_spec)


def key_store(request: web.Request) -> KeyStore:
    found = caller(request)
    return runtime(request).keys if found is None else KeyStore(found)


async def authorize(
    request: web.Request,
    name: str | None,
    all_of: Iterable[str] = (),
    any_of: Iterable[str] = (),
    metadata: bool = False,
) -> None:
    """With a caller token: refuse (SC6001) unless Vault grants these on the credential's path.

    A check before the provider is called and before transit is used; the write itself is still
    made with the caller's token, so Vault has the last word either way.
    """
    found = caller(request)
    if found is None:
        return
    rel = FOLDER if name is None else f"{FOLDER}/{name}"
    path = found.kv_metadata_path(rel) if metadata else found.kv_data_path(rel)
    caps = (await found.capabilities([path]))[path]
    if "root" in caps:
        return
    needed, options = set(all_of), set(any_of)
    missing = sorted(needed - caps)
    if "deny" in caps or missing or (options and not options & caps):
        what = ", ".join(missing or sorted(options))
        raise SidecarError("SC6001", f"your Vault token may not {what} {path}")
