"""``POST /v1/credentials/{name}/webhook-signature/verify``: a provider's webhook, checked here.

The app forwards a webhook exactly as it received it (the raw body as this request's body, the
provider's signature header unchanged) and gets ``{"valid": bool}``, computed from the cached,
decrypted credential with a constant-time comparison. The key is never answered, logged or
counted by name. A read-only route of the local API (both roles), so it takes any media type:
the body is the provider's bytes, not JSON. Its size is bounded per upstream
(``webhook_signature.max_body``), refused (413) as bytes arrive.

Missing, repeated or malformed signature headers are ``{"valid": false}``: each is what a
forged webhook looks like, and the app's rule stays one line (trust only ``valid: true``).
Replay protection (timestamps, event ids) is the app's part.
"""

from __future__ import annotations

import asyncio
import time

from aiohttp import web
from aiohttp.web_urldispatcher import _default_expect_handler

from sidecar import webhooksig
from sidecar.errors import SidecarError
from sidecar.handlers.common import check_name, runtime
from sidecar.handlers.contract import Ok, operation
from sidecar.handlers.models import Answer
from sidecar.logging import get_logger
from sidecar.runtime import Runtime
from sidecar.schemes.base import Credential

routes = web.RouteTableDef()
log = get_logger("sidecar.webhooks")


class WebhookVerdict(Answer):
    valid: bool


async def expect_continue(request: web.Request) -> None:
    """``100 Continue`` only to a request that will be read: a body declared above the limit,
    or one for a credential that will be refused, gets its final answer instead (RFC 9110
    10.1.1 allows it), so the client never starts sending what is refused anyway."""
    rt = runtime(request)
    try:
        spec = _spec(rt, _credential(rt, check_name(request.match_info["name"])))
    except SidecarError:
        return None
    if request.content_length is not None and request.content_length > spec.max_body:
        return None
    await _default_expect_handler(request)  # aiohttp's own: 100 Continue, or 417
    return None


@routes.post("/v1/credentials/{name}/webhook-signature/verify", expect_handler=expect_continue)
@operation(
    "verifyWebhookSignature",
    "Check a provider webhook's signature (raw body, the provider's header) with the cached key",
    Ok(200, "The verdict; anything but valid: true means do not trust the webhook", WebhookVerdict),
    errors=(
        "SC1004",
        "SC2001",
        "SC4003",
        "SC4012",
        "SC4014",
        "SC4035",
        "SC4045",
        "SC4046",
        "SC4047",
    ),
    params=("name",),
    raw_body=True,
)
async def verify_webhook(request: web.Request) -> web.Response:
    rt = runtime(request)
    cred = _credential(rt, check_name(request.match_info["name"]))
    spec = _spec(rt, cred)
    key = cred.secrets.get(spec.field)
    if key is None:
        raise SidecarError("SC4046", f"Credential {cred.name!r} has no {spec.field!r} stored")
    body = await read_limited(request, spec.max_body, rt.config.listen.body_idle_timeout)
    valid = webhooksig.verify(spec, key, body, request.headers)
    outcome = "valid" if valid else "invalid"
    rt.metrics.webhook_verifications.labels(outcome).inc()
    log.info("webhook_signature_checked", credential=cred.name, outcome=outcome, size=len(body))
    return web.json_response(WebhookVerdict(valid=valid).model_dump())


def _credential(rt: Runtime, name: str) -> Credential:
    """From the cache only, as the proxy reads it: no Vault request on this path."""
    if not rt.bootstrapped:
        raise SidecarError("SC4035")
    age = time.monotonic() - (rt.store.last_sync or 0.0)
    if age > rt.config.cache.max_stale:
        raise SidecarError("SC4012")
    cred = rt.store.cached(name)
    if cred is None:
        raise SidecarError("SC2001", f"Credential {name!r} not found")
    if not cred.enabled:  # a disabled key may be a leaked one: its signatures prove nothing
        raise SidecarError("SC4003", f"Credential {name!r} is disabled")
    return cred


def _spec(rt: Runtime, cred: Credential) -> webhooksig.WebhookSignature:
    upstream = rt.upstreams.get(cred.upstream)
    spec = upstream.cfg.webhook_signature if upstream is not None else None
    if spec is None:
        raise SidecarError("SC4045", f"Upstream {cred.upstream!r} declares no webhook_signature")
    return spec


async def read_limited(request: web.Request, limit: int, idle: float) -> bytes:
    """The whole body, refused as soon as it is known to exceed ``limit`` (declared or sent),
    or once it sends nothing for ``idle`` seconds (408 SC4014, as on the proxy listener):
    aiohttp itself would wait for a stalled body for ever, holding the handler."""
    if request.content_length is not None and request.content_length > limit:
        raise SidecarError("SC4047")
    chunks: list[bytes] = []
    size = 0
    while chunk := await _next_chunk(request, idle):
        size += len(chunk)
        if size > limit:
            raise SidecarError("SC4047")
        chunks.append(chunk)
    return b"".join(chunks)


async def _next_chunk(request: web.Request, idle: float) -> bytes:
    """The next piece of the body (b"" at its end), or SC4014 after ``idle`` silent seconds."""
    try:
        return await asyncio.wait_for(request.content.readany(), idle)
    except TimeoutError:
        raise SidecarError("SC4014", "The webhook body sent nothing in time") from None
