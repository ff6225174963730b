"""The roles one image runs as (``shared/DESIGN.md``, "Roles").

- ``proxy``: the default of ``sidecar run`` and what the injector injects. Proxy, local read-only
  API and health listeners; reads and decrypts, never writes (no write route, no key creation).
- ``admin``: ``sidecar admin``. The authenticated admin API and health; its own Vault token only
  encrypts and HMACs with transit, so it keeps no cache of decrypted credentials.
- ``all``: both in one process on loopback (``sidecar dev``); admin changes are seen at once.
"""

from __future__ import annotations

import time
from typing import Literal

from sidecar.config import Config
from sidecar.proxykeys.store import KeyStore
from sidecar.runtime import Runtime
from sidecar.store import CredentialStore

Role = Literal["proxy", "admin", "all"]
ROLES: tuple[Role, ...] = ("proxy", "admin", "all")


class _NoCredentialCache(CredentialStore):
    """The admin role keeps no credential cache: its policy cannot list, read or decrypt."""

    async def sync(self) -> int:
        self.last_sync = time.monotonic()  # nothing to keep fresh: "synced" by construction
        return 0


class _NoKeyCache(KeyStore):
    async def sync(self) -> int:
        return 0


class AdminRuntime(Runtime):
    """The admin role's runtime: a Vault session and the transit key, no credential cache.

    Its own policy grants transit encrypt and HMAC only, so a cache sync (KV list, read,
    decrypt) would be refused; a caller's own token does every KV read the admin API needs.
    Start-up is the runtime's own (log in, check the transit key); only the syncs are empty.
    """

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.store = _NoCredentialCache(self.vault, self.field_spec)
        self.keys = _NoKeyCache(self.vault)


def runtime_for(config: Config, role: Role) -> Runtime:
    """Proxy and admin never create the transit key: that is setup.sh's (or dev's) job."""
    if role != "all":
        config = config.model_copy(
            update={"vault": config.vault.model_copy(update={"create_transit_key": False})}
        )
    return AdminRuntime(config) if role == "admin" else Runtime(config)
