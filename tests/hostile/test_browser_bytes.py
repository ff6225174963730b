"""Issue 13, items 2 and 3, replayed with the bytes Chromium sends, over a raw socket.

Each request is what a page on ``http://127.0.0.2:9000`` makes the browser send: a ``no-cors``
fetch (no Content-Type), a ``text/plain`` form post, or, after DNS rebinding, a request whose
Host is the page's own name. On 42e58b8 each was served (201 key minted, credential replaced,
provider called); each must now be refused with its code, and nothing may change or be spent.
"""

from __future__ import annotations

import json
import socket

import pytest
import requests

from tests.hostile.live import GOOD_KEY, LiveSidecar

PAGE = "http://127.0.0.2:9000"
CHROME = (
    "Connection: keep-alive\r\n"
    'sec-ch-ua-platform: "Linux"\r\n'
    "User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/150.0.0.0 Safari/537.36\r\n"
    "sec-ch-ua-mobile: ?0\r\n"
    "Accept: */*\r\n"
    "Accept-Encoding: gzip, deflate, br, zstd\r\n"
    "Accept-Language: en-US,en;q=0.9\r\n"
)


def raw(url: str, head: str, body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    """Send ``head`` (request line and headers, CRLF-ended) plus ``body``; read the answer."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head.encode() + b"Connection: close\r\n\r\n" + body)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    top, _, payload = data.partition(b"\r\n\r\n")
    lines = top.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])}
    return int(lines[0].split()[1]), headers, payload


def code(payload: bytes) -> str:
    return str(json.loads(payload)["code"])


def no_cors_post(url: str, path: str, body: bytes, host: str | None = None) -> str:
    """Chromium's ``fetch(url, {method: "POST", mode: "no-cors", body: <bytes>})``."""
    authority = host or url.removeprefix("http://")
    return (
        f"POST {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Length: {len(body)}\r\n{CHROME}"
        f"Origin: {PAGE}\r\nSec-Fetch-Site: cross-site\r\nSec-Fetch-Mode: no-cors\r\n"
        f"Sec-Fetch-Dest: empty\r\nReferer: {PAGE}/\r\n"
    )


def form_post(url: str, path: str, body: bytes) -> str:
    """A ``<form enctype="text/plain" method="post">`` submitted to another site."""
    return (
        f"POST {path} HTTP/1.1\r\nHost: {url.removeprefix('http://')}\r\n"
        f"Content-Length: {len(body)}\r\nContent-Type: text/plain\r\n{CHROME}"
        f"Origin: {PAGE}\r\nSec-Fetch-Site: cross-site\r\nSec-Fetch-Mode: navigate\r\n"
        f"Sec-Fetch-Dest: document\r\nSec-Fetch-User: ?1\r\nUpgrade-Insecure-Requests: 1\r\n"
    )


def seeded(live: LiveSidecar) -> dict[str, object]:
    r = requests.put(
        f"{live.admin_url}/v1/credentials/azupay",
        json={"upstream": "azupay", "fields": {"api_key": GOOD_KEY}},
        timeout=15,
    )
    assert r.status_code == 201
    return {k: v for k, v in r.json().items() if k != "verification"}  # the save's, not the record's


def unchanged(live: LiveSidecar, before: dict[str, object]) -> None:
    """Same version, no key minted, nothing proxied to the provider."""
    got = requests.get(f"{live.admin_url}/v1/credentials/azupay", timeout=10).json()
    assert got == before
    keys = requests.get(f"{live.admin_url}/v1/credentials/azupay/keys", timeout=10).json()
    assert keys["keys"] == []
    assert live.peer.seen == []


MINT = json.dumps({"permissions": ["* /*"]}).encode()
PISMO = json.dumps({"key": GOOD_KEY, "provider": "azupay", "type": "main"}).encode()


@pytest.mark.parametrize(
    ("path", "body"),
    [("/v1/credentials/azupay/keys", MINT), ("/v1/credentials", PISMO)],
)
def test_no_cors_post_to_admin_is_refused(live: LiveSidecar, path: str, body: bytes) -> None:
    """A page's no-cors POST (no Content-Type) mints no key and saves no credential: 403."""
    before = seeded(live)
    status, headers, payload = raw(live.admin_url, no_cors_post(live.admin_url, path, body), body)
    assert (status, code(payload)) == (403, "SC1016")
    assert not any(k.startswith("access-control-") for k in headers)
    unchanged(live, before)
    names = [
        c["name"] for c in requests.get(f"{live.admin_url}/v1/credentials").json()["credentials"]
    ]
    assert names == ["azupay"]


def test_body_without_content_type_is_415(live: LiveSidecar) -> None:
    """Even without browser headers, a body with no Content-Type is not taken for JSON."""
    before = seeded(live)
    path = "/v1/credentials/azupay/keys"
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(MINT)}\r\n"
    status, _, payload = raw(live.admin_url, head, MINT)
    assert (status, code(payload)) == (415, "SC1008")
    unchanged(live, before)


def test_text_plain_form_post_to_admin_is_refused(live: LiveSidecar) -> None:
    """A cross-site text/plain form post is refused before its body is read."""
    before = seeded(live)
    body = b'{"permissions": ["* /*"], "x": "=1"}'
    head = form_post(live.admin_url, "/v1/credentials/azupay/keys", body)
    status, _, payload = raw(live.admin_url, head, body)
    assert (status, code(payload)) == (403, "SC1016")
    unchanged(live, before)


def test_rebinding_host_cannot_read_the_admin_api(live: LiveSidecar) -> None:
    """After DNS rebinding the page's GET is same-origin (no Origin) but names its own host."""
    before = seeded(live)
    port = live.admin_url.rsplit(":", 1)[1]
    head = (
        f"GET /v1/credentials HTTP/1.1\r\nHost: evil.example:{port}\r\n{CHROME}"
        "Sec-Fetch-Site: same-origin\r\nSec-Fetch-Mode: cors\r\nSec-Fetch-Dest: empty\r\n"
    )
    status, _, payload = raw(live.admin_url, head)
    assert (status, code(payload)) == (421, "SC1015")
    assert b"azupay" not in payload
    unchanged(live, before)


def test_cross_site_post_to_proxy_spends_nothing(live: LiveSidecar) -> None:
    """A page's text/plain POST to the proxy listener never reaches the provider: 403."""
    before = seeded(live)
    body = b'{"amount": 100}'
    head = form_post(live.proxy_url, "/azupay/v1/paymentRequest", body)
    status, headers, payload = raw(live.proxy_url, head, body)
    assert (status, code(payload), headers.get("x-sidecar-error")) == (403, "SC1016", "SC1016")
    unchanged(live, before)


def test_rebinding_host_cannot_use_the_proxy(live: LiveSidecar) -> None:
    """``Host: evil.example:<proxy port>`` is refused before routing: nothing is spent."""
    before = seeded(live)
    port = live.proxy_url.rsplit(":", 1)[1]
    body = b'{"amount": 100}'
    head = (
        f"POST /azupay/v1/paymentRequest HTTP/1.1\r\nHost: evil.example:{port}\r\n"
        f"Content-Length: {len(body)}\r\nContent-Type: text/plain;charset=UTF-8\r\n{CHROME}"
        "Sec-Fetch-Site: same-origin\r\nSec-Fetch-Mode: cors\r\nSec-Fetch-Dest: empty\r\n"
    )
    status, _, payload = raw(live.proxy_url, head, body)
    assert (status, code(payload)) == (421, "SC1015")
    unchanged(live, before)


def test_same_proxy_request_without_browser_headers_is_spent(live: LiveSidecar) -> None:
    """The control: the app's own request (loopback Host, no Origin) still reaches the peer."""
    seeded(live)
    body = b'{"amount": 100}'
    head = (
        f"POST /azupay/v1/paymentRequest HTTP/1.1\r\nHost: {live.proxy_url[7:]}\r\n"
        f"Content-Length: {len(body)}\r\nContent-Type: application/json\r\n"
    )
    status, _, _ = raw(live.proxy_url, head, body)
    assert status == 200 and [s[:2] for s in live.peer.seen] == [("POST", "/v1/paymentRequest")]


def test_no_cors_headers_even_for_a_preflight(live: LiveSidecar) -> None:
    """An OPTIONS preflight, allowed or not, never gets an Access-Control-* header."""
    port = live.admin_url.rsplit(":", 1)[1]
    for origin in (PAGE, f"http://127.0.0.1:{port}"):
        head = (
            f"OPTIONS /v1/credentials/azupay HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{CHROME}"
            f"Origin: {origin}\r\nAccess-Control-Request-Method: PUT\r\n"
            "Access-Control-Request-Headers: content-type\r\nSec-Fetch-Mode: cors\r\n"
        )
        status, headers, _ = raw(live.admin_url, head)
        assert status in (403, 405)
        assert not [k for k in headers if k.startswith("access-control-")]
    _, headers, _ = raw(live.admin_url, "GET /v1/credentials HTTP/1.1\r\nHost: localhost\r\n")
    assert not [k for k in headers if k.startswith("access-control-")]
