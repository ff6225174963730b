"""The roles one image runs as (``shared/DESIGN.md``, "Roles").

- ``proxy``: the default of ``sidecar run`` and what the injector injects. Proxy, local read-only
  API and health listeners; reads and decrypts, never writes (no write route, no key creation).
- ``admin``: ``sidecar admin``. The authenticated admin API and health; its own Vault token only
  encrypts and HMACs with transit, so it keeps no cache of decrypted credentials.
- ``all``: both in one process on loopback (``sidecar dev``); admin changes are seen at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Literal

from sidecar.config import Config
from sidecar.errors import SidecarError
from sidecar.logging import get_logger
from sidecar.runtime import Runtime

Role = Literal["proxy", "admin", "all"]
ROLES: tuple[Role, ...] = ("proxy", "admin", "all")

log = get_logger("sidecar.roles")


class AdminRuntime(Runtime):
    """The admin role's runtime: a Vault session and the transit key, no credential cache.

    Its policy grants transit encrypt and HMAC only, so a cache sync (KV list, read, decrypt)
    would be refused; a caller's own token does every KV read the admin API needs.
    """

    async def _bootstrap(self) -> None:
        while not self._stop.is_set():
            try:
                await self.vault.login()
                await self.vault.ensure_transit_key()
            except SidecarError as exc:
                log.warning("vault_bootstrap_retry", code=exc.code, error=exc.message)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), 2.0)
                continue
            self.bootstrapped = True
            log.info("sidecar_ready", role="admin", upstreams=len(self.upstreams))
            renew = asyncio.create_task(self.vault.maintain(self._stop), name="renew")
            self._tasks.append(renew)
            return


def runtime_for(config: Config, role: Role) -> Runtime:
    """Proxy and admin never create the transit key: that is setup.sh's (or dev's) job."""
    if role != "all":
        config = config.model_copy(
            update={"vault": config.vault.model_copy(update={"create_transit_key": False})}
        )
    return AdminRuntime(config) if role == "admin" else Runtime(config)
