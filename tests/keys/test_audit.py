"""The audit trail: one event per proxied request, with who spent what, and never a secret."""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import MutableMapping
from typing import Any

import pytest
from structlog.testing import capture_logs

from sidecar.audit import path_template
from tests.integration.conftest import Sidecar
from tests.keys.conftest import CRED, SECRET, bearer, issue

FIELDS = {
    "credential",
    "credential_version",
    "key_id",
    "upstream",
    "method",
    "path_template",
    "status",
    "latency_ms",
    "code",
}


def audit_events(logs: list[MutableMapping[str, Any]]) -> list[dict[str, Any]]:
    return [dict(e) for e in logs if e["event"] == "proxy_request"]


def subset(event: dict[str, Any], expected: dict[str, Any]) -> bool:
    return {k: event.get(k) for k in expected} == expected


def signature(hmac_key: str, stamp: str, method: str, target: str, body: bytes) -> str:
    message = stamp + method + target + hashlib.sha256(body).hexdigest()
    return hmac.new(hmac_key.encode(), message.encode(), hashlib.sha256).hexdigest()


async def test_spends_and_refusals_are_audited_without_secrets(sidecar: Sidecar) -> None:
    """Allowed, refused-by-permission, keyless and unrouted requests each log one clean event."""
    issued = await issue(sidecar, "POST /api/session/*", hmac=True)
    body, stamp = b'{"card": "4111111111111111"}', str(int(time.time()))
    target = "/pix/api/session/12345?token=zqxj42"
    sig = signature(issued["hmac_key"], stamp, "POST", target, body)
    headers = {**bearer(issued["key"]), "X-Sidecar-Timestamp": stamp, "X-Sidecar-Signature": sig}
    uuid_path = "/pix/v1/users/3f2a9c1e-8b7d-4e6f-a5c4-1234567890ab"
    with capture_logs() as logs:
        assert (await sidecar.proxy.post(target, data=body, headers=headers)).status == 200
        assert (await sidecar.proxy.get("/pix/api/other/9", headers=headers)).status == 403
        assert (await sidecar.proxy.get(uuid_path)).status == 401
        assert (await sidecar.proxy.get("/nowhere/x")).status == 403
    events = audit_events(logs)
    assert [e["status"] for e in events] == [200, 403, 401, 403]
    assert all(set(e) >= FIELDS for e in events)
    ok, forbidden, keyless, unrouted = events
    assert subset(
        ok,
        {
            "credential": CRED,
            "credential_version": 1,
            "key_id": issued["key_id"],
            "upstream": "pix",
            "method": "POST",
            "path_template": "/api/session/*",
            "code": None,
        },
    )
    assert ok["latency_ms"] > 0
    assert subset(
        forbidden,
        {
            "key_id": issued["key_id"],
            "path_template": "/api/other/{id}",
            "code": "SC5003",
            "credential_version": None,
        },
    )
    assert subset(keyless, {"key_id": None, "path_template": "/v1/users/{id}", "code": "SC5001"})
    assert subset(unrouted, {"upstream": None, "credential": None, "code": "SC4001"})
    text = repr(logs)
    for secret in (issued["key"], issued["hmac_key"], SECRET, sig, "4111111111111111", "zqxj42"):
        assert secret not in text


@pytest.mark.parametrize(
    ("path", "template"),
    [
        ("/v1/payments/123/refunds", "/v1/payments/{id}/refunds"),
        ("/v1/x/3f2a9c1e-8b7d-4e6f-a5c4-1234567890ab", "/v1/x/{id}"),
        ("/v1/x/deadbeefdeadbeefdead", "/v1/x/{id}"),
        ("/v1/tok/sk_live_51HxYzAbCdEfGh0123", "/v1/tok/{id}"),
        ("/v1/balance", "/v1/balance"),
        ("/v2/paymentRequest/refund", "/v2/paymentRequest/refund"),
        ("/", "/"),
    ],
)
def test_path_template(path: str, template: str) -> None:
    """Digits, UUIDs, long hex and long tokens with a digit become {id}; words stay."""
    assert path_template(path) == template
