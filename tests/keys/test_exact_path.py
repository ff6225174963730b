"""A proxy key's permissions are checked on exactly the path that is sent upstream."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from sidecar.errors import SidecarError
from sidecar.proxykeys.permissions import decoded_path
from tests.integration.conftest import MakeConfig, MakeSidecar, Sidecar
from tests.keys.conftest import CRED, SECRET, Provider, bearer, keyed_upstream


@pytest.fixture
async def keyed(
    provider: tuple[Provider, str], make_config: MakeConfig, make_sidecar: MakeSidecar
) -> tuple[Sidecar, str]:
    """Upstream ``keyed`` requires keys; one key may GET payment statuses and /public/*."""
    _, url = provider
    sc = await make_sidecar(make_config({"keyed": keyed_upstream(url)}))
    fields = {"upstream": "keyed", "fields": {"api_key": SECRET}}
    assert (await sc.admin.put(f"/v1/credentials/{CRED}", json=fields)).status == 201
    r = await sc.admin.post(
        f"/v1/credentials/{CRED}/keys",
        json={"permissions": ["GET /v1/payments/*/status", "GET /public/*"]},
    )
    assert r.status == 201
    body: dict[str, Any] = await r.json()
    return sc, body["key"]


async def send_raw(sc: Sidecar, target: bytes, key: str) -> bytes:
    """One request with a target exactly as given (no client normalises it), then EOF."""
    reader, writer = await asyncio.open_connection(sc.proxy.host, sc.proxy.port)
    auth = bearer(key)["Proxy-Authorization"].encode()
    writer.write(
        b"GET "
        + target
        + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nProxy-Authorization: "
        + auth
        + b"\r\nConnection: close\r\n\r\n"
    )
    await writer.drain()
    raw = await reader.read()
    writer.close()
    return raw


def code_of(raw: bytes) -> tuple[int, str]:
    head = raw.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    status = int(head.split(" ", 2)[1])
    codes = [
        line.split(": ", 1)[1] for line in head.split("\r\n") if line.startswith("X-Sidecar-Error")
    ]
    return status, codes[0] if codes else ""


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (b"/keyed/v1/payments/1/refund#/status", (400, "SC4027")),  # the bypass
        (b"/keyed/v1/payments/1/status#x", (400, "SC4027")),  # a fragment anywhere
        (b"/keyed/v1/payments/1/status?a=1#/x", (400, "SC4027")),  # after the query too
        (b"/keyed/public/..%2f..%2fadmin", (400, "SC4028")),  # the climb
        (b"/keyed/public/a%2Fb", (400, "SC4028")),  # any case
        (b"/keyed/public/..%5c..%5cadmin", (400, "SC4028")),  # encoded backslash
        (b"/keyed/public/..%5C..%5Cadmin", (400, "SC4028")),
        (b"/keyed/public/..\\..\\admin", (400, "SC4028")),  # a bare backslash
        (b"/keyed/public/%2e%2e/admin", (400, "SC4011")),  # encoded dot segment, as before
    ],
)
async def test_targets_the_check_and_the_provider_would_read_differently_are_refused(
    keyed: tuple[Sidecar, str], provider: tuple[Provider, str], target: bytes, expected: Any
) -> None:
    """A fragment or an encoded separator is a 400 with its code, and nothing goes upstream."""
    sc, key = keyed
    peer, _ = provider
    raw = await send_raw(sc, target, key)
    assert code_of(raw) == expected
    assert peer.seen == []


@pytest.mark.parametrize(
    ("target", "sent"),
    [
        (b"/keyed/v1/payments/1/status", "/v1/payments/1/status"),
        (b"/keyed/v1/payments/p%20q/status?x=1", "/v1/payments/p%20q/status?x=1"),
        (b"/keyed/public/%61dmin", "/public/%61dmin"),  # decoded for the check, sent as is
    ],
)
async def test_permitted_requests_still_pass_unchanged(
    keyed: tuple[Sidecar, str], provider: tuple[Provider, str], target: bytes, sent: str
) -> None:
    """Ordinary and percent-encoded permitted paths reach the provider byte for byte."""
    sc, key = keyed
    peer, _ = provider
    raw = await send_raw(sc, target, key)
    assert code_of(raw) == (200, "")
    assert [seen["path"] for seen in peer.seen] == [sent]


async def test_a_path_outside_the_permissions_is_still_403(
    keyed: tuple[Sidecar, str], provider: tuple[Provider, str]
) -> None:
    """The refund path itself, without the fragment trick, is not permitted."""
    sc, key = keyed
    peer, _ = provider
    raw = await send_raw(sc, b"/keyed/v1/payments/1/refund", key)
    assert code_of(raw) == (403, "SC5003")
    assert peer.seen == []


@pytest.mark.parametrize(
    ("raw_path", "outcome"),
    [
        ("/api/%73ession", "/api/session"),
        ("/a%20b", "/a b"),
        ("/a%252f", "/a%2f"),  # decoded once, as the provider does: a literal "%2f" after
        ("/a#b", "SC4027"),
        ("/a%2fb", "SC4028"),
        ("/a%2Fb", "SC4028"),
        ("/a%5cb", "SC4028"),
        ("/a\\b", "SC4028"),
    ],
)
def test_decoded_path(raw_path: str, outcome: str) -> None:
    """The checked form is the raw path decoded once; what decoding would restructure is refused."""
    if outcome.startswith("SC"):
        with pytest.raises(SidecarError) as caught:
            decoded_path(raw_path)
        assert caught.value.code == outcome
    else:
        assert decoded_path(raw_path) == outcome
