"""HMAC signing: canonical strings recomputed independently, presets, validation, verify()."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from multidict import CIMultiDict
from pydantic import ValidationError
from yarl import URL

from sidecar.errors import SidecarError, VerificationFailed
from sidecar.schemes.api_key import ApiKeyOptions
from sidecar.schemes.base import Credential, OutboundRequest, UpstreamContext, UpstreamResponse
from sidecar.schemes.hmac import Hmac, HmacOptions
from sidecar.schemes.registry import build_scheme
from tests.unit.conftest import credential, outbound

ServerFactory = Callable[[web.Application], Awaitable[TestServer]]
CTX = UpstreamContext(name="paynet", url=URL("https://reports.paynet.test"))
NOW = 1_700_000_000.9
PAYNET = credential({"client_id": "cid"}, {"client_secret": "paynet-secret"})


def make(upstream: UpstreamContext = CTX, **options: Any) -> Hmac:
    scheme = Hmac(HmacOptions.model_validate(options), upstream)
    scheme.clock = lambda: NOW
    return scheme


async def sign(scheme: Any, request: OutboundRequest, cred: Credential) -> OutboundRequest:
    flow = scheme.auth_flow(request, cred)
    sent: OutboundRequest = await flow.__anext__()
    await flow.aclose()
    return sent


def mac(key: str, message: str, algorithm: str = "sha256") -> bytes:
    return hmac.new(key.encode(), message.encode(), algorithm).digest()


async def test_paynet_preset_signs_the_timestamp_with_the_client_secret() -> None:
    """paynet_reports: X-Timestamp is unix seconds, X-Signature its hex HMAC-SHA256."""
    scheme = make(preset="paynet_reports")
    sent = await sign(
        scheme, outbound("GET", "https://reports.paynet.test/v1/reports?day=1"), PAYNET
    )
    assert sent.headers["X-Timestamp"] == "1700000000"
    assert sent.headers["X-Signature"] == mac("paynet-secret", "1700000000").hex()
    assert scheme.secret_fields == ("client_secret",)
    assert scheme.optional_fields == ("key_id",) and not scheme.requires_request_body


async def test_explicit_options_override_the_preset() -> None:
    """An option given beside the preset wins; the rest of the preset stays."""
    scheme = make(preset="paynet_reports", encoding="base64", signature_header="X-Sig")
    sent = await sign(scheme, outbound(), PAYNET)
    assert sent.headers["X-Sig"] == base64.b64encode(mac("paynet-secret", "1700000000")).decode()
    assert "X-Signature" not in sent.headers


async def test_full_template_over_raw_path_query_body_and_nonce() -> None:
    """Every placeholder is filled from the wire form of the request and signed with SHA-512."""
    scheme = make(
        template="{method}\n{path}\n{query}\n{timestamp}\n{body_sha256}\n{nonce}",
        algorithm="sha512",
        encoding="base64",
        signature_format="HMAC {signature}",
        nonce_header="X-Nonce",
        key_id_header="X-Key-Id",
    )
    body = b'{"amount": 10}'
    request = outbound("post", "https://p.test/a%2Fb/c%20d?x=1%2B2&y=", body)
    cred = credential({"key_id": "K-1"}, {"hmac_key": "k3y"})
    sent = await sign(scheme, request, cred)
    nonce = sent.headers["X-Nonce"]
    assert len(nonce) == 32 and int(nonce, 16) >= 0
    canonical = (
        f"POST\n/a%2Fb/c%20d\nx=1%2B2&y=\n1700000000\n{hashlib.sha256(body).hexdigest()}\n{nonce}"
    )
    expected = base64.b64encode(mac("k3y", canonical, "sha512")).decode()
    assert sent.headers["X-Signature"] == f"HMAC {expected}"
    assert sent.headers["X-Key-Id"] == "K-1" and sent.headers["X-Timestamp"] == "1700000000"
    assert scheme.requires_request_body and scheme.optional_fields == ()


async def test_no_body_hashes_the_empty_string_and_nonces_are_fresh() -> None:
    """{body_sha256} of a bodiless request is SHA-256(b""); each request draws a new nonce."""
    scheme = make(template="{body_sha256}.{nonce}", nonce_header="X-Nonce", timestamp_header=None)
    cred = credential(secrets={"hmac_key": "k"})
    first, second = [await sign(scheme, outbound(), cred) for _ in range(2)]
    assert first.headers["X-Nonce"] != second.headers["X-Nonce"]
    message = f"{hashlib.sha256(b'').hexdigest()}.{first.headers['X-Nonce']}"
    assert first.headers["X-Signature"] == mac("k", message).hex()
    assert "X-Timestamp" not in first.headers


async def test_timestamp_and_key_id_folded_into_one_header() -> None:
    """signature_format may carry {timestamp} and {key_id} for single-header providers."""
    scheme = make(
        timestamp_header=None,
        signature_header="Authorization",
        signature_format="HMAC {key_id}:{timestamp}:{signature}",
    )
    sent = await sign(scheme, outbound(), credential({"key_id": "K"}, {"hmac_key": "k"}))
    assert sent.headers["Authorization"] == f"HMAC K:1700000000:{mac('k', '1700000000').hex()}"
    assert scheme.optional_fields == ()


async def test_azupay_style_api_key_plus_signature() -> None:
    """A plausible Azupay HMAC-enabled key: api_key then hmac, over one credential."""
    ctx = UpstreamContext(name="azupay", url=URL("https://api-uat.azupay.test"))
    hmac_options = HmacOptions(
        template="{timestamp}:{method}:{path}:{body_sha256}",
        signature_header="Authorization-Signature",
        signature_format="HMAC-SHA256 {signature}",
    )
    scheme = build_scheme([("api_key", ApiKeyOptions()), ("hmac", hmac_options)], ctx)
    scheme.parts[1].clock = lambda: NOW
    assert scheme.secret_fields == ("api_key", "hmac_key")
    cred = credential(secrets={"api_key": "SECR528792_c0e3", "hmac_key": "HMAC_cdei"})
    body = b'{"paymentRequest": {}}'
    sent = await sign(
        scheme, outbound("POST", "https://api-uat.azupay.test/v1/paymentRequest", body), cred
    )
    canonical = f"1700000000:POST:/v1/paymentRequest:{hashlib.sha256(body).hexdigest()}"
    assert sent.headers["Authorization"] == "SECR528792_c0e3"
    assert (
        sent.headers["Authorization-Signature"]
        == f"HMAC-SHA256 {mac('HMAC_cdei', canonical).hex()}"
    )


async def test_flow_yields_once() -> None:
    """A signature cannot be refreshed, so even a 401 ends the flow."""
    flow = make().auth_flow(outbound(), credential(secrets={"hmac_key": "k"}))
    await flow.__anext__()
    with pytest.raises(StopAsyncIteration):
        await flow.asend(UpstreamResponse(401, CIMultiDict()))


async def test_key_id_with_a_newline_is_refused_without_echo() -> None:
    """A stored key_id holding CR/LF must not reach a header, nor the error message."""
    cred = credential({"key_id": "K\r\nX-Evil: 1"}, {"hmac_key": "k"})
    with pytest.raises(SidecarError) as info:
        await sign(make(key_id_header="X-Key-Id"), outbound(), cred)
    assert info.value.code == "SC4010" and "Evil" not in str(info.value)


@pytest.mark.parametrize(
    "options,error",
    [
        ({"template": "{timestamp}{host}"}, "unknown placeholder {host}"),
        ({"template": "{nonce}"}, "nonce_header is not set"),
        ({"template": "{timestamp}", "timestamp_header": None}, "timestamp_header is not set"),
        ({"template": "{timestamp:>12}"}, "no format spec"),
        ({"template": "{method!r}"}, "no format spec"),
        ({"signature_format": "HMAC"}, "exactly once"),
        ({"signature_format": "{signature}{signature}"}, "exactly once"),
        ({"signature_format": "{secret}"}, "unknown placeholder {secret}"),
        ({"preset": "azupay"}, "preset"),
        ({"algorithm": "md5"}, "algorithm"),
        ({"bogus": 1}, "extra"),
    ],
)
def test_options_are_validated(options: dict[str, Any], error: str) -> None:
    """Bad templates and unknown options fail at load, naming the problem."""
    with pytest.raises(ValidationError, match=error):
        HmacOptions.model_validate(options)


def test_every_option_is_described() -> None:
    """The generated JSON Schema documents every option."""
    properties = HmacOptions.model_json_schema()["properties"].values()
    assert all(p.get("description") for p in properties)


@pytest.mark.parametrize(
    "fields,secrets",
    [
        ({}, {}),
        ({}, {"hmac_key": ""}),
        ({"key_id": ""}, {"hmac_key": "k"}),
        ({"key_id": "a\nb"}, {"hmac_key": "k"}),
    ],
)
async def test_verify_without_probe_checks_structure(
    fields: dict[str, str], secrets: dict[str, str]
) -> None:
    """With no probe, a missing or empty key (or a required key_id) is the only possible no."""
    scheme = make(key_id_header="X-Key-Id")
    async with aiohttp.ClientSession() as http:
        with pytest.raises(VerificationFailed, match="paynet - API Invalid credential"):
            await scheme.verify(credential(fields, secrets), http)
        await scheme.verify(credential({"key_id": "K"}, {"hmac_key": "k"}), http)


def signature_peer(seen: list[str]) -> web.Application:
    """A tiny provider that checks '{timestamp}{method}{path}' keyed by 'good-key'."""

    async def balance(request: web.Request) -> web.Response:
        seen.append(request.path)
        message = request.headers.get("X-Timestamp", "") + request.method + request.raw_path
        good = mac("good-key", message).hex()
        ok = hmac.compare_digest(good, request.headers.get("X-Signature", ""))
        return web.json_response(
            {"balance": 1} if ok else {"error": "bad"}, status=200 if ok else 401
        )

    app = web.Application()
    app.router.add_get("/v1/balance", balance)
    return app


@pytest.mark.parametrize("key,valid", [("good-key", True), ("bad-key", False)])
async def test_verify_runs_the_signed_probe(
    aiohttp_server: ServerFactory, key: str, valid: bool
) -> None:
    """With a probe, the provider judges the signature: 200 passes, 401 is VerificationFailed."""
    seen: list[str] = []
    server = await aiohttp_server(signature_peer(seen))
    ctx = UpstreamContext(name="azupay", url=server.make_url("/"))
    scheme = make(ctx, template="{timestamp}{method}{path}", probe={"path": "/v1/balance"})
    scheme.clock = time.time
    async with aiohttp.ClientSession() as http:
        if valid:
            await scheme.verify(credential(secrets={"hmac_key": key}), http)
        else:
            with pytest.raises(VerificationFailed, match="azupay - API Invalid credential"):
                await scheme.verify(credential(secrets={"hmac_key": key}), http)
    assert seen == ["/v1/balance"]
