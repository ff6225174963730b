"""HMAC-enabled keys: a fresh signature passes once; replayed, stale or wrong ones are refused."""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Any

import pytest
from yarl import URL

from sidecar.errors import SidecarError
from sidecar.proxykeys.signing import ReplayGuard
from tests.integration.conftest import Sidecar
from tests.keys.conftest import Provider, bearer, issue


def signed(
    issued: dict[str, Any], method: str, target: str, body: bytes, ts: int | None = None
) -> dict[str, str]:
    """Headers per the README, computed here from scratch: hex HMAC-SHA256 over ts+method+target+sha256(body)."""
    stamp = str(int(time.time()) if ts is None else ts)
    message = stamp + method + target + hashlib.sha256(body).hexdigest()
    signature = hmac.new(issued["hmac_key"].encode(), message.encode(), hashlib.sha256).hexdigest()
    return {**bearer(issued["key"]), "X-Sidecar-Timestamp": stamp, "X-Sidecar-Signature": signature}


async def send(
    sc: Sidecar, method: str, target: str, body: bytes, headers: dict[str, str]
) -> tuple[int, str]:
    url = URL(f"http://{sc.proxy.host}:{sc.proxy.port}{target}", encoded=True)
    r = await sc.proxy.session.request(method, url, data=body, headers=headers)
    await r.read()
    return r.status, r.headers.get("X-Sidecar-Error", "")


async def test_fresh_signature_passes_and_headers_are_stripped(
    sidecar: Sidecar, provider: tuple[Provider, str]
) -> None:
    """A correct signature over path and query passes; key and signature headers are not forwarded."""
    peer, _ = provider
    issued = await issue(sidecar, "POST /api/session", hmac=True)
    target, body = "/pix/api/session?ref=a%2Fb", b'{"amount": 10}'
    assert await send(sidecar, "POST", target, body, signed(issued, "POST", target, body)) == (
        200,
        "",
    )
    seen = peer.seen[-1]
    assert seen["body"] == body and seen["path"] == "/api/session?ref=a%2Fb"
    for header in ("Proxy-Authorization", "X-Sidecar-Timestamp", "X-Sidecar-Signature"):
        assert header not in seen["headers"]


async def test_replayed_signature_is_refused(
    sidecar: Sidecar, provider: tuple[Provider, str]
) -> None:
    """The same signed request sent twice: the second gets 401 SC5005 and never leaves the pod."""
    peer, _ = provider
    issued = await issue(sidecar, "POST /*", hmac=True)
    target, body = "/pix/api/session", b"once"
    headers = signed(issued, "POST", target, body)
    assert await send(sidecar, "POST", target, body, headers) == (200, "")
    before = len(peer.seen)
    assert await send(sidecar, "POST", target, body, headers) == (401, "SC5005")
    assert len(peer.seen) == before
    fresh = signed(issued, "POST", target, b"twice")
    assert await send(sidecar, "POST", target, b"twice", fresh) == (200, "")


async def test_stale_missing_and_wrong_signatures_are_refused(sidecar: Sidecar) -> None:
    """Out of the 5-minute window, missing, tampered body or path: 401 SC5004."""
    issued = await issue(sidecar, "POST /*", hmac=True)
    target, body = "/pix/api/session", b"x"
    now = int(time.time())
    for ts in (now - 301, now + 301):
        assert await send(
            sidecar, "POST", target, body, signed(issued, "POST", target, body, ts)
        ) == (401, "SC5004")
    assert await send(sidecar, "POST", target, body, bearer(issued["key"])) == (401, "SC5004")
    no_sig = signed(issued, "POST", target, body)
    del no_sig["X-Sidecar-Signature"]
    assert await send(sidecar, "POST", target, body, no_sig) == (401, "SC5004")
    good = signed(issued, "POST", target, body)
    assert await send(sidecar, "POST", target, b"y", good) == (401, "SC5004")  # body changed
    assert await send(sidecar, "POST", target + "?x=1", body, good) == (
        401,
        "SC5004",
    )  # query added
    assert await send(sidecar, "POST", target, body, {**good, "X-Sidecar-Timestamp": "abc"}) == (
        401,
        "SC5004",
    )
    assert await send(sidecar, "POST", target, body, good) == (200, "")  # refusals consumed nothing


async def test_signed_body_is_bounded_by_max_body(sidecar: Sidecar) -> None:
    """An HMAC key's body is read up to the upstream's max_body (1 KiB here), then 413 SC4005."""
    issued = await issue(sidecar, "POST /*", hmac=True)
    body = b"z" * 2048
    headers = signed(issued, "POST", "/pix/big", body)
    assert await send(sidecar, "POST", "/pix/big", body, headers) == (413, "SC4005")


async def test_unsigned_key_needs_no_signature(sidecar: Sidecar) -> None:
    """A key without HMAC ignores the signature headers and streams the body."""
    issued = await issue(sidecar, "POST /*")
    assert await send(sidecar, "POST", "/pix/a", b"z" * 2048, bearer(issued["key"])) == (200, "")


def test_replay_guard_is_bounded_and_forgets_after_the_window() -> None:
    """Entries age out after twice the window; when full, new signatures are refused, not evicted."""
    guard = ReplayGuard(limit=2)
    guard.admit("pk1", "a", 1000.0)
    guard.admit("pk1", "b", 1000.0)
    for key_id, sig in (("pk1", "a"), ("pk2", "x")):  # a replay; then a new one while full
        with pytest.raises(SidecarError) as refused:
            guard.admit(key_id, sig, 1400.0)
        assert refused.value.code == "SC5005"
    guard.admit("pk1", "a", 1000.0 + 601)
    assert len(guard) == 1
