"""The proxy's gate for upstreams with ``require_proxy_key``: who is calling, may it do this?

Order of checks, each refusing before anything leaves the pod: a key is presented (SC5001); it
is a live key of the upstream's credential (SC5002, checked from memory); one of its
permissions allows the method and upstream-relative path (SC5003); for an HMAC-enabled key the
signature headers are present and fresh (SC5004) before the body is read, and the signature
over the body is right (SC5004) and new (SC5005) after. The key and signature headers are
removed from what is forwarded; the upstream's scheme then injects the real credential.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from multidict import CIMultiDict
from yarl import URL

from sidecar import audit
from sidecar.errors import SidecarError
from sidecar.proxykeys.index import KeyEntry
from sidecar.proxykeys.permissions import decoded_path, first_match
from sidecar.proxykeys.request import KeyedRequest
from sidecar.proxykeys.signing import SIGNATURE, TIMESTAMP, ReplayGuard, check_timestamp, verify
from sidecar.timestamps import now_iso

if TYPE_CHECKING:
    from sidecar.runtime import Runtime
    from sidecar.upstreams import Upstream

DEFAULT_HEADER = "Proxy-Authorization"


@dataclass(slots=True)
class Grant:
    """What the gate let through; ``signed`` means the body must be read and checked."""

    entry: KeyEntry | None = None
    replays: ReplayGuard | None = None
    signed_target: str = ""
    timestamp: str | None = None
    signature: str | None = None

    @property
    def signed(self) -> bool:
        return self.entry is not None and self.entry.hmac_enabled

    def check_body(self, method: str, body: bytes | None) -> None:
        """The last check, once the body is in hand; marks the key used on success."""
        entry = self.entry
        if entry is None:
            return
        if entry.hmac_enabled:
            if entry.hmac_key is None or self.replays is None:
                raise SidecarError("SC5004", "HMAC key not loaded yet; retry shortly")
            request_line = (method, self.signed_target, body or b"")
            headers = (self.timestamp, self.signature)
            verify(entry.hmac_key, entry.key_id, request_line, headers, self.replays)
        entry.last_used_at = now_iso()


OPEN = Grant()


def presented_key(request: KeyedRequest, header: str) -> str:
    """``Bearer <key>``; a header other than Proxy-Authorization may also carry the bare key."""
    values = request.headers.getall(header, [])
    if not values:
        raise SidecarError("SC5001", f"Send the proxy key in {header}")
    if len(values) > 1:
        raise SidecarError("SC5002", "Send one proxy key per request")
    kind, _, rest = values[0].strip().partition(" ")
    if kind.lower() == "bearer":
        return rest.strip()
    if header.lower() == DEFAULT_HEADER.lower():
        raise SidecarError("SC5001", f"{header} must be 'Bearer <key>'")
    return values[0].strip()


def signed_target(request: KeyedRequest) -> str:
    """Path and query as the caller sent them (absolute-form: without scheme and host)."""
    target = request.raw_path
    if target.startswith(("http://", "https://")):
        return URL(target, encoded=True).raw_path_qs
    return target


async def admit(
    rt: Runtime,
    upstream: Upstream,
    request: KeyedRequest,
    headers: CIMultiDict[str],
    raw_path: str,
) -> Grant:
    """Check the caller's key and permissions; strip the key and signature headers."""
    cfg = upstream.cfg
    audit.routed(request, upstream.name, cfg.credential, raw_path)
    if not cfg.require_proxy_key:
        return OPEN
    for name in (cfg.proxy_key_header, TIMESTAMP, SIGNATURE):
        headers.popall(name, None)
    entry = await rt.keys.authenticate(cfg.credential, presented_key(request, cfg.proxy_key_header))
    return grant_for(rt, request, entry, raw_path)


def grant_for(rt: Runtime, request: KeyedRequest, entry: KeyEntry, raw_path: str) -> Grant:
    """The checks after authentication, shared with opaque tokens bound to a key
    (``sidecar.proxy.tokens``): permission (SC5003), then an HMAC-enabled key's headers."""
    audit.keyed(request, entry.key_id)
    permission = first_match(entry.permissions, request.method, decoded_path(raw_path))
    if permission is None:
        raise SidecarError("SC5003", f"Key {entry.key_id} does not permit this request")
    audit.keyed(request, entry.key_id, permission.pattern)
    grant = Grant(entry, rt.keys.replays, signed_target(request))
    if entry.hmac_enabled:
        grant.timestamp = check_timestamp(request.headers.get(TIMESTAMP), time.time())
        grant.signature = request.headers.get(SIGNATURE)
        if grant.signature is None:
            raise SidecarError("SC5004", f"{SIGNATURE} is missing")
    return grant
