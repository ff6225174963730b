"""API keys: templates into headers or the query, field declarations, validation, verify()."""

from __future__ import annotations

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
from sidecar.schemes.api_key import ApiKey, ApiKeyOptions
from sidecar.schemes.base import Credential, OutboundRequest, UpstreamContext, UpstreamResponse
from tests.unit.conftest import credential, outbound

ServerFactory = Callable[[web.Application], Awaitable[TestServer]]
CTX = UpstreamContext(name="azupay", url=URL("https://api-uat.azupay.test"))
AZUPAY = credential(secrets={"api_key": "SECR_MYBUSINESSID_nR2duCGXlqWSuYJF"})
INTASEND = credential({"public_key": "ISPubKey_test_1"}, {"api_key": "ISSecretKey_test_2"})
INTASEND_OPTIONS: dict[str, Any] = {
    "template": "Bearer {api_key}",
    "extra_headers": {"INTASEND_PUBLIC_API_KEY": "{public_key}"},
}


def make(upstream: UpstreamContext = CTX, **options: Any) -> ApiKey:
    return ApiKey(ApiKeyOptions.model_validate(options), upstream)


async def sign(scheme: ApiKey, request: OutboundRequest, cred: Credential) -> OutboundRequest:
    flow = scheme.auth_flow(request, cred)
    sent = await flow.__anext__()
    await flow.aclose()
    return sent


async def test_azupay_key_goes_into_authorization_as_is() -> None:
    """The default is Azupay's: ``Authorization: <key>``, replacing whatever the app sent."""
    scheme = make()
    sent = await sign(scheme, outbound(headers={"Authorization": "app-guess"}), AZUPAY)
    assert sent.headers.getall("Authorization") == ["SECR_MYBUSINESSID_nR2duCGXlqWSuYJF"]
    assert (scheme.secret_fields, scheme.public_fields) == (("api_key",), ("public_key", "key_id"))
    assert scheme.optional_fields == ("public_key", "key_id")
    assert not scheme.requires_request_body and not scheme.replays_request


async def test_intasend_bearer_and_public_key_header() -> None:
    """IntaSend: a Bearer secret and the public key header; public_key becomes required."""
    scheme = make(**INTASEND_OPTIONS)
    sent = await sign(scheme, outbound(), INTASEND)
    assert sent.headers["Authorization"] == "Bearer ISSecretKey_test_2"
    assert sent.headers["INTASEND_PUBLIC_API_KEY"] == "ISPubKey_test_1"
    assert scheme.optional_fields == ("key_id",)


async def test_query_param_replaces_the_apps_and_keeps_the_rest() -> None:
    """With query_param the value is URL-encoded into the query, and no header is set."""
    scheme = make(query_param="key", template="{key_id}.{api_key}")
    cred = credential({"key_id": "id 1"}, {"api_key": "a+b/c=="})
    sent = await sign(scheme, outbound(url="https://p.test/v1/x?page=2&key=app"), cred)
    assert sent.url.query.getall("key") == ["id 1.a+b/c=="]
    assert sent.url.query["page"] == "2"
    assert "%2B" in sent.url.raw_query_string and "Authorization" not in sent.headers


async def test_key_field_names_the_secret() -> None:
    """key_field moves the secret to another field name, e.g. a composite's client_secret."""
    scheme = make(key_field="client_secret", template="Token {client_secret}")
    sent = await sign(scheme, outbound(), credential(secrets={"client_secret": "cs"}))
    assert sent.headers["Authorization"] == "Token cs"
    assert scheme.secret_fields == ("client_secret",)


@pytest.mark.parametrize("value", ["k\r\nX-Evil: 1", "k\x00", "k\x7f"])
async def test_control_characters_are_refused_without_echo(value: str) -> None:
    """A stored value that would split or corrupt the header is SC4010, not sent, not echoed."""
    with pytest.raises(SidecarError) as info:
        await sign(make(), outbound(), credential(secrets={"api_key": value}))
    assert info.value.code == "SC4010" and "Evil" not in str(info.value)


async def test_flow_yields_once() -> None:
    """A static key cannot be refreshed, so even a 401 ends the flow."""
    flow = make().auth_flow(outbound(), AZUPAY)
    await flow.__anext__()
    with pytest.raises(StopAsyncIteration):
        await flow.asend(UpstreamResponse(401, CIMultiDict()))


@pytest.mark.parametrize(
    "options,error",
    [
        ({"template": "Bearer {secret_key}"}, "unknown placeholder {secret_key}"),
        ({"extra_headers": {"X-Pub": "{pub}"}}, "unknown placeholder {pub}"),
        ({"template": "{api_key!r}"}, "no format spec"),
        ({"template": "{api_key:>40}"}, "no format spec"),
        ({"template": "{api_key"}, "template"),
        ({"header": None}, "set header or query_param"),
        ({"headers": "X"}, "extra"),
    ],
)
def test_options_are_validated(options: dict[str, Any], error: str) -> None:
    """Templates may only name known fields; every problem is a load-time error."""
    with pytest.raises(ValidationError, match=error):
        ApiKeyOptions.model_validate(options)


def test_every_option_is_described() -> None:
    """The generated JSON Schema documents every option."""
    properties = ApiKeyOptions.model_json_schema()["properties"].values()
    assert all(p.get("description") for p in properties)


@pytest.mark.parametrize(
    "cred",
    [
        credential(),
        credential(secrets={"api_key": ""}),
        credential(secrets={"api_key": "k"}),
        credential({"public_key": "p\n"}, {"api_key": "k"}),
    ],
)
async def test_verify_without_probe_checks_used_fields(cred: Credential) -> None:
    """No probe: a missing, empty or header-unfit field the templates use is a no."""
    scheme = make(**INTASEND_OPTIONS)
    async with aiohttp.ClientSession() as http:
        with pytest.raises(VerificationFailed, match="azupay - API Invalid credential"):
            await scheme.verify(cred, http)
        await scheme.verify(INTASEND, http)


def provider(seen: list[str]) -> web.Application:
    """A tiny Azupay/IntaSend: the balance and wallets calls check the stored keys."""

    async def balance(request: web.Request) -> web.Response:
        seen.append(request.path)
        if request.headers.get("Authorization") == "SECR_MYBUSINESSID_nR2duCGXlqWSuYJF":
            return web.json_response({"balance": "10.00"})
        if request.headers.get("Authorization", "").startswith("SECR_DISABLED"):
            return web.json_response({"message": "Forbidden"}, status=403)
        return web.json_response({"message": "Unauthorized"}, status=401)

    async def wallets(request: web.Request) -> web.Response:
        seen.append(request.path)
        good = request.headers.get("Authorization") == "Bearer ISSecretKey_test_2"
        good = good and request.headers.get("INTASEND_PUBLIC_API_KEY") == "ISPubKey_test_1"
        return web.json_response({"results": []}, status=200 if good else 401)

    app = web.Application()
    app.router.add_get("/v1/balance", balance)
    app.router.add_get("/api/v1/wallets/", wallets)
    return app


@pytest.mark.parametrize(
    "key,valid",
    [
        ("SECR_MYBUSINESSID_nR2duCGXlqWSuYJF", True),
        ("SECR_WRONG", False),
        ("SECR_DISABLED_1", False),
    ],
)
async def test_verify_azupay_balance_probe(
    aiohttp_server: ServerFactory, key: str, valid: bool
) -> None:
    """Azupay's probe GET /v1/balance: 200 passes, 401 and 403 are VerificationFailed."""
    seen: list[str] = []
    ctx = UpstreamContext(name="azupay", url=(await aiohttp_server(provider(seen))).make_url("/"))
    scheme = make(ctx, probe={"path": "/v1/balance"})
    async with aiohttp.ClientSession() as http:
        if valid:
            await scheme.verify(credential(secrets={"api_key": key}), http)
        else:
            with pytest.raises(VerificationFailed):
                await scheme.verify(credential(secrets={"api_key": key}), http)
    assert seen == ["/v1/balance"]


async def test_verify_intasend_wallets_probe(aiohttp_server: ServerFactory) -> None:
    """IntaSend's probe GET /api/v1/wallets/ carries both headers; a wrong secret is a no."""
    seen: list[str] = []
    ctx = UpstreamContext(name="intasend", url=(await aiohttp_server(provider(seen))).make_url("/"))
    scheme = make(ctx, probe={"path": "/api/v1/wallets/"}, **INTASEND_OPTIONS)
    async with aiohttp.ClientSession() as http:
        await scheme.verify(INTASEND, http)
        wrong = credential({"public_key": "ISPubKey_test_1"}, {"api_key": "nope"})
        with pytest.raises(VerificationFailed, match="intasend - API Invalid credential"):
            await scheme.verify(wrong, http)
    assert seen == ["/api/v1/wallets/", "/api/v1/wallets/"]


async def test_verify_unreachable_is_sc2006(unused_tcp_port: int) -> None:
    """A closed port cannot tell valid from invalid: SC2006."""
    ctx = UpstreamContext(name="azupay", url=URL(f"http://127.0.0.1:{unused_tcp_port}"))
    async with aiohttp.ClientSession() as http:
        with pytest.raises(SidecarError) as info:
            await make(ctx, probe={"path": "/v1/balance"}).verify(AZUPAY, http)
    assert info.value.code == "SC2006"
