"""An attacker's pass over issue 15's surfaces: token emulation, placeholders, webhook verify.

The app in the pod is semi-trusted (it may be compromised and want the real secret, the real
provider token, more than its proxy key allows, or a revoked key's life), a provider's answers
are untrusted, and a web page on the same host is untrusted. Each test sends what such an
attacker would, over real loopback sockets where the framing matters, to a real sidecar on the
suite's OpenBao in front of the shipped Kopokopo sandbox peer.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from multidict import CIMultiDict
from yarl import URL

from sidecar.app import build_local_app
from sidecar.errors import ConfigError
from sidecar.proxy import placeholders, tokens
from sidecar.sandbox import kopokopo
from sidecar.sandbox.oauth2 import OAUTH2_STATE, OAuth2State
from sidecar.schemes.base import Credential
from tests.integration.conftest import (  # noqa: F401  (fixtures used by name)
    MakeConfig,
    MakeSidecar,
    Sidecar,
    make_config,
    make_sidecar,
)
from tests.kopokopo import k2_upstream

HOST = "sandbox.kopokopo.com"
CLIENT_ID = "k2-attack-client-id"
SECRET = "k2-attack-real-secret-7f3a"
PH_ID, PH_SECRET = "{{K2_CLIENT_ID}}", "{{K2_CLIENT_SECRET}}"
FORM = f"client_id={PH_ID}&client_secret={PH_SECRET}&grant_type=client_credentials"


@dataclass
class Target:
    sidecar: Sidecar
    peer: OAuth2State

    @property
    def port(self) -> int:
        port = self.sidecar.proxy.server.port
        assert port is not None
        return port

    async def raw(self, data: bytes, wait: float = 5.0) -> bytes:
        """Send bytes on a fresh connection; everything the sidecar answers until it closes."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        writer.write(data)
        await writer.drain()
        try:
            return await asyncio.wait_for(reader.read(-1), wait)
        finally:
            writer.close()

    def app_requests(self) -> list[str]:
        """Paths of requests the peer got that the sidecar did not make for its own token."""
        own = [s for s in self.peer.seen if s.path == "/oauth/token" and CLIENT_ID in _text(s)]
        return [s.path for s in self.peer.seen if s not in own]


def _text(seen: Any) -> str:
    return str(seen.body) + str(dict(seen.headers))


def post(path: str, body: str, *headers: str) -> bytes:
    lines = [
        f"POST {path} HTTP/1.1",
        "Host: 127.0.0.1",
        "Content-Type: application/x-www-form-urlencoded",
        f"Content-Length: {len(body.encode())}",
        *headers,
        "Connection: close",
        "",
        body,
    ]
    return "\r\n".join(lines).encode()


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def body_of(answer: bytes) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(answer.partition(b"\r\n\r\n")[2] or b"{}")
    return doc


@pytest.fixture
async def start(
    make_config: MakeConfig,  # noqa: F811
    make_sidecar: MakeSidecar,  # noqa: F811
    aiohttp_server: Any,
) -> Any:
    """A sidecar emulating Kopokopo's token endpoint in front of the Kopokopo sandbox peer."""

    async def go(
        fields: dict[str, str] | None = None,
        secret: str = SECRET,
        cfg: dict[str, Any] | None = None,
        **extra: Any,
    ) -> Target:
        app = kopokopo.make_app(kopokopo.KopokopoConfig(clients={CLIENT_ID: secret}))
        server = await aiohttp_server(app)
        upstream = k2_upstream(str(server.make_url("/")).rstrip("/"), token_extras=[], **extra)
        sc = await make_sidecar(make_config({"kopokopo": upstream}, **(cfg or {})))
        fields = {"client_id": CLIENT_ID, "client_secret": secret, **(fields or {})}
        r = await sc.admin.put(
            "/v1/credentials/kopokopo", json={"upstream": "kopokopo", "fields": fields}
        )
        assert r.status == 201, await r.text()
        app[OAUTH2_STATE].seen.clear()
        return Target(sc, app[OAUTH2_STATE])

    return go


# -- token emulation: the token path and the spellings a provider reads as the same ------------

VARIANTS = [
    "/oauth/token",
    "/oauth/token/",
    "//oauth/token",
    "/oauth//token",
    "/oauth/token.json",
    "/OAUTH/token",
    "/oauth/TOKEN",
    "/oauth/token;x=1",
    "/oauth/token%3Bx=1",
    "/oauth/%74oken",
]


def test_no_client_secret_placeholder_on_an_emulating_upstream(
    make_config: MakeConfig,  # noqa: F811
) -> None:
    """With token_path a placeholder for client_secret is a config error: substituted in any
    other request it could be traded for a real token, or read back from a provider that
    stores and shows request fields (the Kopokopo peer's payment view did, on 4b14dbb)."""
    upstream = k2_upstream(
        "http://127.0.0.1:9", placeholders={PH_ID: "client_id", PH_SECRET: "client_secret"}
    )
    with pytest.raises(ConfigError) as err:
        make_config({"kopokopo": upstream})
    assert "placeholders" in str(err.value) and "token_path" in str(err.value)
    del upstream["token_path"]
    make_config({"kopokopo": upstream})  # without emulation it is the operator's choice


@pytest.mark.parametrize("variant", VARIANTS)
async def test_token_path_spellings_never_reach_the_provider(start: Any, variant: str) -> None:
    """Every spelling of the token path a provider may route to its token endpoint (Rails
    squeezes slashes and takes a ``.json`` format; servlet containers drop ``;params``) is
    answered or refused by the sidecar, never forwarded with the app's client credentials. On
    4b14dbb, with placeholders for them, ``/oauth/token.json`` reached the Doorkeeper-shaped
    peer with the real secret and the app got a real provider token."""
    it = await start(placeholders={PH_ID: "client_id"})
    answer = await it.raw(post("/kopokopo" + variant, FORM))
    assert it.app_requests() == [], variant
    assert SECRET.encode() not in answer
    assert not any(t.encode() in answer for t in it.peer.tokens)
    if status_of(answer) == 200:
        assert body_of(answer)["access_token"].startswith(tokens.PREFIX)
    else:
        assert body_of(answer)["code"] == "SC4044", answer


def split(answers: bytes) -> list[int]:
    """The status codes of every answer in a byte stream (bodies here never hold ``HTTP/1.1``)."""
    return [int(part[:3]) for part in answers.split(b"HTTP/1.1 ")[1:]]


async def test_pipelined_token_requests_each_get_their_own_answer(start: Any) -> None:
    """Two token requests and a call written at once on one connection: three answers in
    order, two distinct opaque tokens, and the peer sees only the call (with the real Bearer)."""
    it = await start()
    one = post("/kopokopo/oauth/token", FORM).replace(b"Connection: close\r\n", b"")
    call = b"GET /kopokopo/api/v2/incoming_payments/x HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    answers = await it.raw(one + one + call + b"Connection: close\r\n\r\n")
    assert split(answers) == [200, 200, 404]
    issued = {t for t in answers.split(b'"') if t.startswith(tokens.PREFIX.encode())}
    assert len(issued) == 2
    assert it.app_requests() == ["/api/v2/incoming_payments/x"]


async def test_token_request_with_expect_continue(start: Any) -> None:
    """``Expect: 100-continue``: an acceptable token request gets 100 then the opaque token;
    one declaring a body over token_max_body gets 413 SC4041 and no 100 (nothing is read)."""
    it = await start(token_max_body=256)
    reader, writer = await asyncio.open_connection("127.0.0.1", it.port)
    head = post("/kopokopo/oauth/token", FORM, "Expect: 100-continue").partition(b"\r\n\r\n")[0]
    writer.write(head + b"\r\n\r\n")
    assert (await asyncio.wait_for(reader.readline(), 5)).startswith(b"HTTP/1.1 100")
    writer.write(FORM.encode())
    answer = await asyncio.wait_for(reader.read(-1), 5)
    writer.close()
    assert status_of(answer[answer.index(b"HTTP/1.1 2") :]) == 200
    big = post("/kopokopo/oauth/token", "x" * 300, "Expect: 100-continue").partition(b"\r\n\r\n")
    answer = await it.raw(big[0] + b"\r\n\r\n")
    assert b"100 Continue" not in answer and status_of(answer) == 413
    assert body_of(answer)["code"] == "SC4041" and it.app_requests() == []


async def test_chunked_token_body_is_refused_while_it_arrives(start: Any) -> None:
    """A chunked token request that never ends is refused (413 SC4041) once it passes
    token_max_body, without waiting for the rest: a slow or endless body holds nothing."""
    it = await start(token_max_body=512)
    reader, writer = await asyncio.open_connection("127.0.0.1", it.port)
    head = (
        "POST /kopokopo/oauth/token HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    writer.write(head.encode() + b"200\r\n" + b"a" * 0x200 + b"\r\n" + b"10\r\n" + b"b" * 16)
    answer = await asyncio.wait_for(reader.read(-1), 5)  # no terminating chunk is ever sent
    writer.close()
    assert status_of(answer) == 413 and body_of(answer)["code"] == "SC4041"


@pytest.mark.parametrize("method", ["GET", "HEAD", "OPTIONS", "PUT", "DELETE"])
async def test_other_methods_on_token_path_are_405_and_not_forwarded(
    start: Any, method: str
) -> None:
    """Only POST is answered on token_path; any other method is 405 SC4042, never forwarded."""
    it = await start()
    request = f"{method} /kopokopo/oauth/token HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    answer = await it.raw((request + "Connection: close\r\n\r\n").encode())
    assert status_of(answer) == 405 and b"Allow: POST" in answer
    assert it.app_requests() == []


async def token_of(it: Target, path: str = "/kopokopo/oauth/token") -> str:
    answer = await it.raw(post(path, FORM))
    assert status_of(answer) == 200, answer
    token: str = body_of(answer)["access_token"]
    return token


def call(token: str, *headers: str, path: str = "/kopokopo/api/v2/incoming_payments/x") -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1", *headers, "Connection: close", "", ""]
    return "\r\n".join(lines).replace("{token}", token).encode()


@pytest.mark.parametrize(
    "headers",
    [
        ("Authorization: Bearer {token}", "Authorization: Bearer {token}"),
        ("Authorization: Bearer {token}", "authorization: Bearer sctok_other"),
        ("Authorization: Bearer {token}, Bearer sctok_other",),
        ("Authorization: Bearer sctok_{token}",),
        ("Authorization: Bearer {token}x",),
    ],
)
async def test_mangled_or_repeated_bearers_are_401_before_the_provider(
    start: Any, headers: tuple[str, ...]
) -> None:
    """Two Authorization headers, a list, or a token with extra text: 401, nothing sent."""
    it = await start()
    token = await token_of(it)
    answer = await it.raw(call(token, *headers))
    assert status_of(answer) == 401 and body_of(answer)["code"] == "SC4043"
    assert it.app_requests() == []


# -- webhook verify: the local API's yes/no on a provider's signature -------------------------

API_KEY = "k2-webhook-key-a15-9d2c"
VERIFY = "/v1/credentials/kopokopo/webhook-signature/verify"
STAMPED = {"header": "X-Sig", "field": "api_key", "template": "{header:X-Ts}.{body}"}


async def local_port(it: Target, aiohttp_server: Any) -> int:
    server = await aiohttp_server(build_local_app(it.sidecar.runtime, own_runtime=False))
    port: int = server.port
    return port


async def send_raw(port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    try:
        return await asyncio.wait_for(reader.read(-1), 5)
    finally:
        writer.close()


def verify_request(body: bytes, *headers: bytes) -> bytes:
    head = [
        b"POST " + VERIFY.encode() + b" HTTP/1.1",
        b"Host: 127.0.0.1",
        b"Content-Length: %d" % len(body),
        *headers,
        b"Connection: close",
    ]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


def hmac_hex(message: bytes) -> bytes:
    return hmac.new(API_KEY.encode(), message, hashlib.sha256).hexdigest().encode()


async def test_signed_header_is_compared_as_the_bytes_sent(start: Any, aiohttp_server: Any) -> None:
    """A template signing a header covers that header's exact bytes: a value the provider never
    signed (non-Latin-1 text folded to ``?``) is invalid, and the provider's own UTF-8 bytes
    verify. Folding made ``t中1`` and ``t?1`` one message: a signed header could be swapped."""
    it = await start(fields={"api_key": API_KEY}, webhook_signature=STAMPED)
    port = await local_port(it, aiohttp_server)
    body = b'{"id": "evt-1"}'
    forged = verify_request(body, b"X-Ts: t\xe4\xb8\xad1", b"X-Sig: " + hmac_hex(b"t?1." + body))
    assert body_of(await send_raw(port, forged)) == {"valid": False}
    genuine = b"t\xe4\xb8\xad1"
    signed = verify_request(body, b"X-Ts: " + genuine, b"X-Sig: " + hmac_hex(genuine + b"." + body))
    assert body_of(await send_raw(port, signed)) == {"valid": True}


KOPOKOPO_SIG = {"preset": "kopokopo", "max_body": 1024}


@pytest.mark.parametrize(
    "header",
    [
        b"Host: evil.example",
        b"Origin: http://evil.example",
        b"Sec-Fetch-Site: cross-site",
        b"Sec-Fetch-Site: same-site",
    ],
)
async def test_a_web_page_cannot_use_verify(start: Any, aiohttp_server: Any, header: bytes) -> None:
    """A page on the same host (foreign Origin, a rebinding Host, a cross-site fetch) is
    refused before the body is read or the key looked at: no verdict, nothing counted."""
    it = await start(fields={"api_key": API_KEY}, webhook_signature=KOPOKOPO_SIG)
    port = await local_port(it, aiohttp_server)
    body = b'{"id": "evt-2"}'
    request = verify_request(body, header, b"X-KopoKopo-Signature: " + hmac_hex(body))
    if header.startswith(b"Host:"):
        request = request.replace(b"Host: 127.0.0.1\r\n", b"")
    answer = await send_raw(port, request)
    assert status_of(answer) in (403, 421) and b"valid" not in answer
    assert it.sidecar.runtime.metrics.webhook_verifications.labels("valid")._value.get() == 0


async def test_verify_is_not_on_the_proxy_listener(start: Any) -> None:
    """The verify route exists only on the local API: on the proxy it is an unknown upstream
    (403 SC4001) and the peer sees nothing."""
    it = await start(fields={"api_key": API_KEY}, webhook_signature=KOPOKOPO_SIG)
    body = b'{"id": "evt-3"}'
    answer = await it.raw(verify_request(body, b"X-KopoKopo-Signature: " + hmac_hex(body)))
    assert status_of(answer) == 403 and body_of(answer)["code"] == "SC4001"
    assert it.app_requests() == []


async def test_chunked_webhook_over_the_limit_is_refused_while_it_arrives(
    start: Any, aiohttp_server: Any
) -> None:
    """A chunked body that passes max_body and never ends is 413 SC4047 at once."""
    it = await start(fields={"api_key": API_KEY}, webhook_signature=KOPOKOPO_SIG)
    port = await local_port(it, aiohttp_server)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = f"POST {VERIFY} HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
    writer.write(f"{head}X-KopoKopo-Signature: 00\r\n\r\n".encode() + b"800\r\n" + b"a" * 0x800)
    # the terminating chunk never comes; the answer does (the connection lingers, as aiohttp's do)
    answer = await asyncio.wait_for(reader.readuntil(b"}"), 5)
    writer.close()
    assert status_of(answer) == 413 and body_of(answer)["code"] == "SC4047"


@pytest.mark.parametrize(
    ("headers", "valid"),
    [
        ((b"x-kopokopo-signature: {sig}",), True),  # header names are case-insensitive
        ((b"X-KopoKopo-Signature: {SIG}",), True),  # the same bytes in upper-case hex
        ((b"X-KopoKopo-Signature: {sig}", b"X-KopoKopo-Signature: {sig}"), False),
        ((b"X-KopoKopo-Signature: sha256={sig}",), False),
        ((b"X-KopoKopo-Signature: {half}",), False),
        ((b"X-KopoKopo-Signature: ",), False),
        ((b"X-KopoKopo-Signature: {sig}00",), False),
    ],
)
async def test_signature_header_spellings(
    start: Any, aiohttp_server: Any, headers: tuple[bytes, ...], valid: bool
) -> None:
    """Only exactly one header holding exactly the digest verifies: a repeat, a prefix the
    preset does not use, a truncated or extended digest are each invalid."""
    it = await start(fields={"api_key": API_KEY}, webhook_signature=KOPOKOPO_SIG)
    port = await local_port(it, aiohttp_server)
    body = b'{"id": "evt-4", "amount": "100.0"}'
    sig = hmac_hex(body)
    filled = [
        h.replace(b"{sig}", sig).replace(b"{SIG}", sig.upper()).replace(b"{half}", sig[:32])
        for h in headers
    ]
    assert body_of(await send_raw(port, verify_request(body, *filled))) == {"valid": valid}


# -- placeholders: fail closed whatever the encoding, never a secret in the wrong place ---------

PAY = "/kopokopo/api/v2/incoming_payments"


def pay(body: bytes, *headers: bytes, path: str = PAY) -> bytes:
    head = [b"POST " + path.encode() + b" HTTP/1.1", b"Host: 127.0.0.1", *headers]
    head += [b"Content-Length: %d" % len(body), b"Connection: close"]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


JSON_CT = b"Content-Type: application/json"
DOC = '{"note": "%s"}'


@pytest.mark.parametrize(
    ("body", "headers", "code"),
    [
        ((DOC % PH_SECRET).encode("utf-16"), (JSON_CT,), "SC4053"),
        ((DOC % PH_SECRET).encode("utf-16-be"), (JSON_CT + b"; charset=utf-16be",), "SC4053"),
        ((DOC % PH_SECRET).encode("utf-32"), (JSON_CT,), "SC4053"),
        (b"\xef\xbb\xbf" + (DOC % PH_SECRET).encode(), (JSON_CT,), "SC4051"),
        ((DOC % PH_SECRET).encode(), (), "SC4051"),
        ((DOC % PH_SECRET).encode(), (b"Content-Type: text/plain",), "SC4051"),
        ((DOC % PH_SECRET).encode(), (JSON_CT, b"Content-Type: application/json"), "SC4051"),
        ((DOC % PH_SECRET).encode(), (JSON_CT, b"Content-Encoding: identity, gzip"), "SC4053"),
        (
            b'--b\r\nContent-Disposition: form-data; name="s"\r\n\r\n'
            + PH_SECRET.encode()
            + b"\r\n--b--\r\n",
            (b"Content-Type: multipart/form-data; boundary=b",),
            "SC4051",
        ),
        ((DOC % ("x" + PH_SECRET)).encode(), (JSON_CT,), "SC4050"),
        ((DOC % PH_SECRET.replace("{", "\\\\u007b")).encode(), (JSON_CT,), "SC4050"),
        (('{"' + PH_SECRET + '": "x"}').encode(), (JSON_CT,), "SC4054"),
        (
            b"a=1;s=" + PH_SECRET.encode(),
            (b"Content-Type: application/x-www-form-urlencoded",),
            "SC4050",
        ),
    ],
    ids=[
        "utf16-bom",
        "utf16be-charset",
        "utf32",
        "utf8-bom",
        "no-type",
        "text-plain",
        "two-types",
        "gzip-in-list",
        "multipart",
        "longer-value",
        "escaped-escape",
        "key",
        "semicolon-form",
    ],
)
async def test_placeholder_bodies_that_cannot_be_substituted_are_refused(
    start: Any, body: bytes, headers: tuple[bytes, ...], code: str
) -> None:
    """Every encoding, media type or position the sidecar cannot substitute safely is 400 with
    its code, and the provider sees nothing: never a guess, never a half-substituted body."""
    it = await start(token_path=None, placeholders={PH_SECRET: "client_secret"})
    answer = await it.raw(pay(body, *headers))
    assert status_of(answer) == 400 and body_of(answer)["code"] == code, answer
    assert it.app_requests() == []


async def test_placeholder_in_a_header_or_path_is_never_substituted(start: Any) -> None:
    """Headers are not rewritten (the literal goes out as is, never the secret); the path is
    refused (SC4050)."""
    it = await start(token_path=None, placeholders={PH_SECRET: "client_secret"})
    answer = await it.raw(pay(b"{}", JSON_CT, b"X-Note: " + PH_SECRET.encode()))
    assert status_of(answer) == 400  # the peer's own refusal of an incomplete payment
    assert [s.headers["X-Note"] for s in it.peer.seen if s.path != "/oauth/token"] == [PH_SECRET]
    assert not any(SECRET.encode() in s.body for s in it.peer.seen if s.path != "/oauth/token")
    answer = await it.raw(pay(b"{}", JSON_CT, path=PAY + "/" + PH_SECRET))
    assert status_of(answer) == 400 and body_of(answer)["code"] == "SC4050"


@pytest.mark.parametrize(
    "secret", ['q"}, "amount": {"value": 1}, "x": "', "back\\slash\\u0022", "\u2028\x00\x1f\ud7ff"]
)
async def test_a_hostile_secret_cannot_change_the_json_structure(start: Any, secret: str) -> None:
    """A secret holding quotes, backslashes, escapes or separators is one JSON string value at
    the provider: the document it parses has the same keys as the one the app sent."""
    it = await start(secret=secret, token_path=None, placeholders={PH_SECRET: "client_secret"})
    doc = {"till_number": "K1", "note": PH_SECRET, "amount": {"value": 100}}
    await it.raw(pay(json.dumps(doc).encode(), JSON_CT))
    sent = json.loads(next(s.body for s in it.peer.seen if s.path == PAY[len("/kopokopo") :]))
    assert sent == {**doc, "note": secret}


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_a_refused_token_request_body_is_not_read_as_a_request(
    start: Any, method: str
) -> None:
    """A token request refused before or after its body is read (405, 400) whose body looks
    like another request: that body never becomes a request, on this connection or upstream."""
    it = await start()
    smuggled = (
        b"GET /kopokopo/api/v2/incoming_payments/smuggled HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    )
    head = (
        f"{method} /kopokopo/oauth/token HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: text/plain\r\nContent-Length: {len(smuggled)}\r\n\r\n"
    )
    follow = b"GET /kopokopo/api/v2/incoming_payments/after HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    answers = await it.raw(head.encode() + smuggled + follow + b"Connection: close\r\n\r\n")
    assert split(answers)[0] == (405 if method == "GET" else 400)
    assert "/api/v2/incoming_payments/smuggled" not in it.app_requests()
    assert set(it.app_requests()) <= {"/api/v2/incoming_payments/after"}


async def test_placeholder_body_limit_holds_while_bytes_arrive(start: Any) -> None:
    """On a placeholder upstream a chunked body that passes max_body and never ends is 413
    SC4005 at once; nothing is sent."""
    it = await start(token_path=None, max_body=1024, placeholders={PH_SECRET: "client_secret"})
    reader, writer = await asyncio.open_connection("127.0.0.1", it.port)
    head = f"POST {PAY} HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
    writer.write(
        f"{head}Content-Type: application/json\r\n\r\n".encode() + b"800\r\n" + b"[" * 0x800
    )
    answer = await asyncio.wait_for(reader.read(-1), 5)  # the terminating chunk never comes
    writer.close()
    assert status_of(answer) == 413 and body_of(answer)["code"] == "SC4005"
    assert it.app_requests() == []


MIB = 1024 * 1024
CRAFTED = {
    "form: 150k values of '+%2B'": (b"&".join([b"a=+%2B"] * (MIB // 7)), "form"),
    "json: 65k placeholders": (
        b"[" + b",".join([b'"{{K2_SECRET}}"'] * (MIB // 16 - 1)) + b"]",
        "json",
    ),
    "json: nested %25..7B": (b'["' + b"%2525252525257B" * (MIB // 16) + b'"]', "json"),
}


@pytest.mark.parametrize("name", list(CRAFTED))
def test_crafted_one_mib_bodies_cost_a_bounded_pass(name: str) -> None:
    """The worst bodies found for the placeholder scan (tiny encoded values, every literal, deep
    percent nesting) at 1 MiB each complete with the expected outcome; ``-s`` prints the CPU
    time (0.2-0.5 s each on the shared 2-core build machine)."""
    body, kind = CRAFTED[name]
    assert len(body) <= MIB
    ctype = "application/json" if kind == "json" else "application/x-www-form-urlencoded"
    cfg = type("Cfg", (), {"placeholders": {"{{K2_SECRET}}": "client_secret"}})()
    cfg.placeholder_pattern = r"\{\{\s*[A-Za-z0-9_.:-]{1,64}\s*\}\}"
    cfg.max_body = MIB
    cfg.scrub_answers = False  # the 3-byte secret below is too short to mask (SC4032)
    now = datetime.now(UTC)
    cred = Credential(
        "k", "k", "oauth2", "sandbox", True, {}, {"client_secret": 's"1'}, {}, 1, now, now
    )
    started = time.perf_counter()
    _, out = placeholders.apply(
        cfg, cred, URL("http://x/a"), CIMultiDict({"Content-Type": ctype}), body
    )
    elapsed = time.perf_counter() - started
    print(f"placeholder scan, {name}, {len(body)} bytes: {elapsed * 1e3:.0f} ms")
    if "placeholders" in name:
        assert out is not None and out.count(b'"s\\"1"') == MIB // 16 - 1
    else:
        assert out is body


async def test_a_token_and_another_keys_header_do_not_add_up(start: Any) -> None:
    """With require_proxy_key, a call carrying key A's opaque token and key B's proxy key gets
    A's permissions only (403 SC5003 where only B may go), and B's key never leaves the pod."""
    it = await start(require_proxy_key=True)
    minted = []
    for permissions in (["GET /api/v2/incoming_payments/*"], ["* /*"]):
        r = await it.sidecar.admin.post(
            "/v1/credentials/kopokopo/keys", json={"permissions": permissions}
        )
        assert r.status == 201, await r.text()
        minted.append(await r.json())
    narrow, broad = minted
    form = f"client_id={narrow['key_id']}&client_secret={narrow['key']}"
    answer = await it.raw(post("/kopokopo/oauth/token", form + "&grant_type=client_credentials"))
    token = body_of(answer)["access_token"]
    both = (f"Authorization: Bearer {token}", f"Proxy-Authorization: Bearer {broad['key']}")
    answer = await it.raw(pay(b"{}", JSON_CT, *(h.encode() for h in both)))
    assert status_of(answer) == 403 and body_of(answer)["code"] == "SC5003"
    answer = await it.raw(call(token, *both))
    assert status_of(answer) == 404  # the peer's: the narrow key may GET a payment
    assert it.app_requests() == ["/api/v2/incoming_payments/x"]
    assert not it.peer.saw(broad["key"]) and not it.peer.saw(token)


async def test_a_stalled_webhook_body_is_408_not_held_for_ever(
    start: Any, aiohttp_server: Any
) -> None:
    """A verify request whose body stops arriving is 408 SC4014 after listen.body_idle_timeout
    (as on the proxy listener); on 4b14dbb the handler waited for it for ever."""
    it = await start(
        fields={"api_key": API_KEY},
        webhook_signature=KOPOKOPO_SIG,
        cfg={"listen": {"body_idle_timeout": 0.2}},
    )
    port = await local_port(it, aiohttp_server)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(verify_request(b"0123456789", b"X-KopoKopo-Signature: 00")[:-5])
    answer = await asyncio.wait_for(reader.readuntil(b"}"), 5)  # 5 bytes never come
    writer.close()
    assert status_of(answer) == 408 and body_of(answer)["code"] == "SC4014"


@pytest.mark.parametrize(
    "header", ["Origin: http://evil.example", "Sec-Fetch-Site: cross-site", "Host: evil.example"]
)
async def test_a_web_page_gets_no_opaque_token(start: Any, header: str) -> None:
    """A form POST from a page on the same host (a simple request, no preflight) is refused
    before a token is issued: a foreign Origin or a cross-site fetch 403, a rebinding Host 421."""
    it = await start()
    request = post("/kopokopo/oauth/token", FORM, header)
    if header.startswith("Host:"):
        request = request.replace(b"Host: 127.0.0.1\r\n", b"", 1)
    answer = await it.raw(request)
    assert status_of(answer) in (403, 421) and tokens.PREFIX.encode() not in answer
    assert tokens.table(it.sidecar.runtime, "kopokopo").issued == 0


async def test_a_compressed_webhook_bomb_stops_at_max_body(start: Any, aiohttp_server: Any) -> None:
    """aiohttp inflates a gzip request body; 64 MiB of zeros in 64 KiB is refused 413 SC4047
    once max_body inflated bytes are counted, not inflated whole first."""
    it = await start(fields={"api_key": API_KEY}, webhook_signature=KOPOKOPO_SIG)
    port = await local_port(it, aiohttp_server)
    bomb = gzip.compress(bytes(64 * MIB), compresslevel=9)
    request = verify_request(bomb, b"Content-Encoding: gzip", b"X-KopoKopo-Signature: 00")
    answer = await send_raw(port, request)
    print(f"gzip bomb: {len(bomb)} bytes sent, answer {answer[:12]!r}")
    assert status_of(answer) == 413 and body_of(answer)["code"] == "SC4047"


@pytest.mark.parametrize("kind", ["json", "form"])
async def test_substitution_cannot_grow_a_body_past_max_body(start: Any, kind: str) -> None:
    """A 4 KiB secret in 2,500 tiny placeholders: a body within max_body (64 KiB) would become
    10 MiB in memory and upstream (over 150 times). Past twice max_body it is 413 SC4048,
    nothing sent; on 4b14dbb the sidecar built and sent it whole."""
    secret = "s" * 4096
    literal = {PH_SECRET: "client_secret"}
    it = await start(secret=secret, token_path=None, max_body=64 * 1024, placeholders=literal)
    if kind == "json":
        body, ctype = json.dumps([PH_SECRET] * 2500).encode(), JSON_CT
    else:
        body = "&".join([f"a={PH_SECRET}"] * 2500).encode()
        ctype = b"Content-Type: application/x-www-form-urlencoded"
    answer = await it.raw(pay(body, ctype))
    print(f"placeholder growth: {len(body)} bytes in, over {2500 * 4096} would go out")
    assert status_of(answer) == 413 and body_of(answer)["code"] == "SC4048"
    assert it.app_requests() == []
    small = json.dumps([PH_SECRET] * 30).encode()  # 120 KiB out: within twice max_body, sent
    answer = await it.raw(pay(small, JSON_CT))
    sent = [s.body for s in it.peer.seen if s.path == PAY[len("/kopokopo") :]]
    assert sent and json.loads(sent[0]) == [secret] * 30
