"""Token-endpoint emulation (``token_path``) against the Kopokopo sandbox peer and real OpenBao.

The app asks the sidecar for a token and gets an opaque one; the peer sees the real client
credentials only in the sidecar's own token requests and the real Bearer only on calls.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from structlog.testing import capture_logs

from sidecar.proxy import tokens
from sidecar.sandbox import kopokopo
from sidecar.sandbox.oauth2 import OAUTH2_STATE, OAuth2State
from tests.integration.conftest import MakeConfig, MakeSidecar, Sidecar
from tests.kopokopo import CLIENT_ID, HOST, STK, k2_upstream
from tests.leakscan import Collected

SECRET = "k2-real-client-secret-0001"
FORM = {
    "client_id": "placeholder-id",
    "client_secret": "placeholder",
    "grant_type": "client_credentials",
}
PAY = "/kopokopo/api/v2/incoming_payments"


@dataclass
class Emulating:
    sidecar: Sidecar
    peer: OAuth2State

    async def token(self, **form: str) -> dict[str, Any]:
        r = await self.sidecar.proxy.post("/kopokopo/oauth/token", data={**FORM, **form})
        assert r.status == 200, await r.text()
        body: dict[str, Any] = await r.json()
        return body

    async def pay(self, token: str | None) -> aiohttp.ClientResponse:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return await self.sidecar.proxy.post(PAY, json=STK, headers=headers)

    def real_tokens(self) -> set[str]:
        return set(self.peer.tokens)


@pytest.fixture
async def peer(aiohttp_server: Any) -> tuple[OAuth2State, str]:
    app = kopokopo.make_app(kopokopo.KopokopoConfig(clients={CLIENT_ID: SECRET}))
    server = await aiohttp_server(app)
    return app[OAUTH2_STATE], str(server.make_url("/")).rstrip("/")


@pytest.fixture
def start(make_config: MakeConfig, make_sidecar: MakeSidecar, peer: tuple[OAuth2State, str]) -> Any:
    """Start a sidecar emulating Kopokopo's token endpoint, its credential stored."""

    async def go(store: bool = True, extra: dict[str, Any] | None = None, **cfg: Any) -> Emulating:
        options = dict(extra or {})
        upstreams = {"kopokopo": k2_upstream(peer[1], **cfg), **options.pop("more", {})}
        sc = await make_sidecar(make_config(upstreams, **options))
        if store:
            body = {
                "upstream": "kopokopo",
                "fields": {"client_id": CLIENT_ID, "client_secret": SECRET},
            }
            r = await sc.admin.put("/v1/credentials/kopokopo", json=body)
            assert r.status == 201, await r.text()
        peer[0].seen.clear()  # the verification's token request
        return Emulating(sc, peer[0])

    return go


async def test_form_token_then_call_carries_the_real_bearer_only(start: Any) -> None:
    """Form client auth gets an opaque Kopokopo-shaped token; the call reaches the peer with the
    real Bearer, the token requests with the real secret, and the app sees neither."""
    it = await start()
    seen = Collected()
    r = await it.sidecar.proxy.post("/kopokopo/oauth/token", data=FORM)
    answer = await r.json()
    seen.add(await r.text())
    seen.add(str(dict(r.headers)))
    assert r.status == 200 and r.headers["Cache-Control"] == "no-store"
    assert sorted(answer) == ["access_token", "created_at", "expires_in", "token_type"]
    assert answer["token_type"] == "Bearer" and answer["expires_in"] == 3600
    assert answer["access_token"].startswith(tokens.PREFIX) and isinstance(
        answer["created_at"], int
    )
    assert len(it.peer.seen) == 0  # answered by the sidecar itself
    resp = await it.pay(answer["access_token"])
    seen.add(await resp.text())
    seen.add(str(dict(resp.headers)))
    assert resp.status == 201 and resp.headers["Location"].startswith(f"https://{HOST}/api/v2/")
    token_req, call = it.peer.seen
    assert token_req.path == "/oauth/token" and f"client_secret={SECRET}".encode() in token_req.body
    assert call.headers["Authorization"].removeprefix("Bearer ") in it.real_tokens()
    for placeholder in ("placeholder", answer["access_token"]):
        assert not it.peer.saw(placeholder)
    assert seen.hits([SECRET, *it.real_tokens()]) == []


async def test_basic_client_auth_and_both_methods_at_once(start: Any) -> None:
    """HTTP Basic works like the form; Basic plus a body secret is 400 SC4040 invalid_request."""
    it = await start()
    basic = "Basic " + base64.b64encode(b"placeholder-id:placeholder").decode()
    form = {"grant_type": "client_credentials"}
    r = await it.sidecar.proxy.post(
        "/kopokopo/oauth/token", data=form, headers={"Authorization": basic}
    )
    assert r.status == 200 and (await r.json())["access_token"].startswith(tokens.PREFIX)
    r = await it.sidecar.proxy.post(
        "/kopokopo/oauth/token", data=FORM, headers={"Authorization": basic}
    )
    body = await r.json()
    assert (r.status, body["code"], body["error"]) == (400, "SC4040", "invalid_request")
    assert len(it.peer.seen) == 0


@pytest.mark.parametrize(
    "bearer", [tokens.PREFIX + "x" * 43, "k2-real-looking-token", tokens.PREFIX]
)
async def test_unknown_opaque_token_is_401_before_upstream(start: Any, bearer: str) -> None:
    """An unknown Bearer is 401 SC4043 with RFC 6750's invalid_token challenge; nothing is sent."""
    it = await start()
    r = await it.pay(bearer)
    body = await r.json()
    assert (r.status, body["code"], body["error"]) == (401, "SC4043", "invalid_token")
    assert r.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    assert len(it.peer.seen) == 0


async def test_expired_opaque_token_is_401_before_upstream(start: Any) -> None:
    """Past token_lifetime the opaque token is 401 SC4043, and the SDK may ask again."""
    it = await start(token_lifetime=60)
    token = (await it.token())["access_token"]
    table = tokens.table(it.sidecar.runtime, "kopokopo")
    table.clock = lambda: time.monotonic() + 61
    r = await it.pay(token)
    assert (r.status, r.headers["X-Sidecar-Error"]) == (401, "SC4043")
    assert len(it.peer.seen) == 0
    assert (await it.pay((await it.token())["access_token"])).status == 201


async def test_no_authorization_passes_without_proxy_keys(start: Any) -> None:
    """Without require_proxy_key a call with no Authorization is proxied as before."""
    it = await start()
    assert (await it.pay(None)).status == 201


async def test_token_table_is_bounded_under_a_flood(start: Any) -> None:
    """Fifty token requests with token_max_live=5 keep five tokens; the oldest are evicted."""
    it = await start(token_max_live=5)
    started = time.perf_counter()
    issued = [(await it.token())["access_token"] for _ in range(50)]
    elapsed = time.perf_counter() - started
    table = tokens.table(it.sidecar.runtime, "kopokopo")
    print(f"50 token requests in {elapsed * 1000:.0f} ms; table", len(table.tokens), table.evicted)
    assert (len(table.tokens), table.issued, table.evicted) == (5, 50, 45)
    assert (await it.pay(issued[0])).status == 401
    assert (await it.pay(issued[-1])).status == 201


BAD_BODIES = [
    ("application/json", b'{"grant_type": "client_credentials",', "SC4040"),
    ("application/json", b'["client_credentials"]', "SC4040"),
    ("application/json", b'{"grant_type": 1}', "SC4040"),
    ("application/json", b"[" * 4000, "SC4040"),
    ("text/plain", b"grant_type=client_credentials", "SC4040"),
    ("application/x-www-form-urlencoded", b"client_id=a&client_secret=b", "SC4040"),
    ("application/x-www-form-urlencoded", b"grant_type=password", "SC4040"),
    ("application/x-www-form-urlencoded", b"grant_type=client_credentials&a=1&a=2", "SC4040"),
    ("application/x-www-form-urlencoded", b"grant_type=client_credentials&x=\xff", "SC4040"),
    ("application/x-www-form-urlencoded", b"&".join([b"a%d=1" % i for i in range(40)]), "SC4040"),
    (
        "application/x-www-form-urlencoded",
        b"grant_type=client_credentials&p=" + b"x" * 5000,
        "SC4041",
    ),
]


@pytest.mark.parametrize(("ctype", "raw", "code"), BAD_BODIES)
async def test_malformed_token_requests_are_refused(
    start: Any, ctype: str, raw: bytes, code: str
) -> None:
    """Not a form, bad JSON, wrong types, repeats, too many fields or too large: a code, no token."""
    it = await start()
    r = await it.sidecar.proxy.post(
        "/kopokopo/oauth/token", data=raw, headers={"Content-Type": ctype}
    )
    body = await r.json()
    assert (r.headers["X-Sidecar-Error"], body["code"]) == (code, code)
    assert body["error"] in ("invalid_request", "unsupported_grant_type")
    assert tokens.table(it.sidecar.runtime, "kopokopo").issued == 0 and len(it.peer.seen) == 0


async def test_huge_token_request_is_refused_before_it_is_read(start: Any) -> None:
    """A Content-Length over token_max_body is 413 SC4041 on the head; the body is not read."""
    it = await start()
    reader, writer = await asyncio.open_connection(it.sidecar.proxy.host, it.sidecar.proxy.port)
    writer.write(
        b"POST /kopokopo/oauth/token HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100000000\r\n\r\n"
    )
    raw = await reader.read()
    writer.close()
    assert raw.startswith(b"HTTP/1.1 413") and b"SC4041" in raw and b"Connection: close" in raw


async def test_token_path_accepts_post_only(start: Any) -> None:
    """GET on the token path is 405 SC4042 and is not forwarded either."""
    it = await start()
    r = await it.sidecar.proxy.get("/kopokopo/oauth/token")
    assert (r.status, r.headers["X-Sidecar-Error"], r.headers["Allow"]) == (405, "SC4042", "POST")
    assert len(it.peer.seen) == 0


async def test_a_restart_forgets_every_opaque_token(start: Any) -> None:
    """Tokens live in memory only: a new runtime (a restart) answers 401 SC4043 to an old one."""
    first = await start()
    token = (await first.token())["access_token"]
    await first.sidecar.runtime.close()
    second = await start(store=False)
    r = await second.pay(token)
    assert (r.status, r.headers["X-Sidecar-Error"]) == (401, "SC4043")
    assert (await second.pay((await second.token())["access_token"])).status == 201


async def test_token_request_in_forward_proxy_mode(start: Any) -> None:
    """An absolute-form token request to the provider host is answered by the sidecar."""
    it = await start()
    reader, writer = await asyncio.open_connection(it.sidecar.proxy.host, it.sidecar.proxy.port)
    body = b"client_id=a&client_secret=b&grant_type=client_credentials"
    writer.write(
        b"POST http://%s/oauth/token HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: %d\r\n\r\n%s"
        % (HOST.encode(), HOST.encode(), len(body), body)
    )
    raw = await reader.read()
    writer.close()
    assert raw.startswith(b"HTTP/1.1 200") and tokens.PREFIX.encode() in raw
    assert len(it.peer.seen) == 0


async def test_token_request_through_an_intercepted_tunnel(start: Any, tmp_path: Path) -> None:
    """Over CONNECT + the sidecar's CA: the token and the call work, the peer sees the real ones."""
    ca_file = tmp_path / "ca.pem"
    it = await start(extra={"intercept": {"enabled": True, "ca_cert_path": str(ca_file)}})
    proxy = f"http://127.0.0.1:{it.sidecar.proxy.port}"
    ctx = ssl.create_default_context(cafile=str(ca_file))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as http:
        async with http.post(f"https://{HOST}/oauth/token", data=FORM, proxy=proxy) as r:
            token = (await r.json())["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        async with http.post(
            f"https://{HOST}/api/v2/incoming_payments", json=STK, headers=headers, proxy=proxy
        ) as r:
            assert r.status == 201
    assert token.startswith(tokens.PREFIX)
    [call] = [s for s in it.peer.seen if s.path != "/oauth/token"]
    assert call.headers["Authorization"] != f"Bearer {token}" and not it.peer.saw(token)


async def test_token_path_variants_are_emulated_not_forwarded(start: Any) -> None:
    """A trailing slash or a query still hits the emulated endpoint: never the provider's."""
    it = await start()
    r = await it.sidecar.proxy.post("/kopokopo/oauth/token/", data=FORM)
    assert r.status == 200 and (await r.json())["access_token"].startswith(tokens.PREFIX)
    r = await it.sidecar.proxy.post("/kopokopo/oauth/token?x=1", data=FORM)
    assert r.status == 200 and (await r.json())["access_token"].startswith(tokens.PREFIX)
    assert len(it.peer.seen) == 0


# -- require_proxy_key: the token request is the app's authentication ----------------------


async def keyed(start: Any, *permissions: str, **extra: Any) -> tuple[Emulating, dict[str, Any]]:
    it = await start(require_proxy_key=True)
    r = await it.sidecar.admin.post(
        "/v1/credentials/kopokopo/keys", json={"permissions": list(permissions), **extra}
    )
    assert r.status == 201, await r.text()
    return it, await r.json()


async def test_proxy_key_as_client_credentials(start: Any) -> None:
    """client_id = key id and client_secret = key get a token; its calls carry the real Bearer."""
    it, key = await keyed(start, "POST /api/v2/incoming_payments")
    answer = await it.token(client_id=key["key_id"], client_secret=key["key"])
    assert (await it.pay(answer["access_token"])).status == 201
    assert not it.peer.saw(key["key"]) and not it.peer.saw(answer["access_token"])


@pytest.mark.parametrize("which", ["wrong-secret", "wrong-id", "no-credentials", "bad-basic"])
async def test_wrong_client_auth_is_401_invalid_client(start: Any, which: str) -> None:
    """A wrong key, a key under another id, none at all, or garbled Basic: 401 SC5007."""
    it, key = await keyed(start, "* /*")
    other = key["key"][:-4] + ("AAAA" if not key["key"].endswith("AAAA") else "BBBB")
    forms = {
        "wrong-secret": {**FORM, "client_id": key["key_id"], "client_secret": other},
        "wrong-id": {**FORM, "client_id": "pk0000000000000000", "client_secret": key["key"]},
        "no-credentials": {"grant_type": "client_credentials"},
        "bad-basic": {"grant_type": "client_credentials"},
    }
    headers = {"Authorization": "Basic !!!"} if which == "bad-basic" else {}
    r = await it.sidecar.proxy.post("/kopokopo/oauth/token", data=forms[which], headers=headers)
    body = await r.json()
    assert (r.status, body["code"], body["error"]) == (401, "SC5007", "invalid_client")
    assert r.headers["WWW-Authenticate"] == 'Basic realm="sidecar"'
    assert key["key"] not in await r.text()
    assert tokens.table(it.sidecar.runtime, "kopokopo").issued == 0


async def test_key_permissions_apply_to_its_token(start: Any) -> None:
    """A key without the payment path gets its token, then 403 SC5003; the peer sees nothing."""
    it, key = await keyed(start, "GET /api/v2/incoming_payments/*")
    answer = await it.token(client_id=key["key_id"], client_secret=key["key"])
    r = await it.pay(answer["access_token"])
    assert (r.status, r.headers["X-Sidecar-Error"]) == (403, "SC5003")
    assert len(it.peer.seen) == 0


async def test_disabled_or_deleted_key_kills_its_token_at_once(start: Any) -> None:
    """Disabling the key makes its token 401 SC5008 at the next call; re-enabling does not revive it."""
    it, key = await keyed(start, "* /*")
    answer = await it.token(client_id=key["key_id"], client_secret=key["key"])
    assert (await it.pay(answer["access_token"])).status == 201
    url = f"/v1/credentials/kopokopo/keys/{key['key_id']}"
    assert (await it.sidecar.admin.patch(url, json={"enabled": False})).status == 200
    it.peer.seen.clear()
    r = await it.pay(answer["access_token"])
    assert (r.status, r.headers["X-Sidecar-Error"]) == (401, "SC5008")
    assert r.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    assert (await it.sidecar.admin.patch(url, json={"enabled": True})).status == 200
    r = await it.pay(answer["access_token"])
    assert (r.status, r.headers["X-Sidecar-Error"]) == (401, "SC4043")
    assert len(it.peer.seen) == 0


async def test_no_authorization_needs_a_proxy_key(start: Any) -> None:
    """With require_proxy_key a call with neither opaque token nor proxy key is 401 SC5001."""
    it, key = await keyed(start, "* /*")
    r = await it.pay(None)
    assert (r.status, r.headers["X-Sidecar-Error"]) == (401, "SC5001")
    proxy_key = {"Proxy-Authorization": f"Bearer {key['key']}"}
    assert (await it.sidecar.proxy.post(PAY, json=STK, headers=proxy_key)).status == 201


async def test_token_request_body_in_many_tls_records_arrives_intact(
    start: Any, tmp_path: Path
) -> None:
    """A body sent as one TLS record per byte reaches the tunnel's parser unchanged: asyncio's
    SSL layer reads later records into ``buf[offset:]``, which a bytearray buffer silently
    dropped (the body became zeros, so k2-connect's token request failed at random)."""
    ca_file = tmp_path / "ca.pem"
    it = await start(extra={"intercept": {"enabled": True, "ca_cert_path": str(ca_file)}})
    reader, writer = await asyncio.open_connection("127.0.0.1", it.sidecar.proxy.port)
    writer.write(f"CONNECT {HOST}:443 HTTP/1.1\r\nHost: {HOST}:443\r\n\r\n".encode())
    assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
    ctx = ssl.create_default_context(cafile=str(ca_file))
    await writer.start_tls(ctx, server_hostname=HOST)
    body = b"client_id=a&client_secret=b&grant_type=client_credentials"
    writer.write(
        b"POST /oauth/token HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: %d\r\n\r\n"
        % (HOST.encode(), len(body))
    )
    for i in range(len(body)):
        writer.write(body[i : i + 1])  # one TLS record each, all in one burst
    raw = await reader.read()
    writer.close()
    assert raw.startswith(b"HTTP/1.1 200") and tokens.PREFIX.encode() in raw


async def test_an_opaque_token_opens_only_its_own_upstream(start: Any, peer: Any) -> None:
    """A token from one emulating upstream is unknown (401 SC4043) on another, even to the
    same provider: each upstream has its own table."""
    twin = k2_upstream(peer[1], hosts=[], credential="kopokopo")
    it = await start(extra={"more": {"twin": twin}})
    token = (await it.token())["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    r = await it.sidecar.proxy.post("/twin/api/v2/incoming_payments", json=STK, headers=headers)
    assert (r.status, r.headers["X-Sidecar-Error"]) == (401, "SC4043")
    assert len(it.peer.seen) == 0


async def test_hmac_enabled_key_token_still_needs_signatures(start: Any) -> None:
    """A token bound to an HMAC-enabled key carries the key's signature rule: 401 SC5004."""
    it, key = await keyed(start, "* /*", hmac=True)
    answer = await it.token(client_id=key["key_id"], client_secret=key["key"])
    r = await it.pay(answer["access_token"])
    assert (r.status, r.headers["X-Sidecar-Error"]) == (401, "SC5004")
    assert len(it.peer.seen) == 0


async def test_client_credentials_are_never_logged(start: Any) -> None:
    """Neither placeholders nor a proxy key sent as client_secret appear in any log event."""
    it, key = await keyed(start, "* /*")
    with capture_logs() as logs:
        await it.token(client_id=key["key_id"], client_secret=key["key"])
        bad = {**FORM, "client_id": key["key_id"], "client_secret": "placeholder-x"}
        assert (await it.sidecar.proxy.post("/kopokopo/oauth/token", data=bad)).status == 401
    text = str(logs)
    assert "token_issued" in text and key["key"] not in text and "placeholder" not in text
