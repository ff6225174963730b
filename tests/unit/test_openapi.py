"""The OpenAPI document: generated from the routes, one-to-one with them, valid, honest codes."""

from __future__ import annotations

import json
from typing import Any

import pytest
import schemathesis
from aiohttp import web

from sidecar import config
from sidecar.app import build_admin_app, build_health_app
from sidecar.errors import CODES
from sidecar.handlers import openapi
from sidecar.runtime import Runtime

METHODS = {"get", "put", "post", "patch", "delete", "head", "options", "trace"}


def admin_app() -> web.Application:
    return build_admin_app(Runtime(config.loads("{}", {})), own_runtime=False)


def documented(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (method.upper(), path)
        for path, item in doc["paths"].items()
        for method in item
        if method in METHODS
    }


async def test_served_document_is_generated_from_the_app(aiohttp_client: Any) -> None:
    """GET /v1/openapi.json answers the document rendered from the serving app's routes."""
    app = admin_app()
    client = await aiohttp_client(app)
    r = await client.get("/v1/openapi.json", headers={"Host": "127.0.0.1"})
    assert r.status == 200 and r.content_type == "application/json"
    assert json.loads(await r.read()) == openapi.document(app)


def test_every_route_is_documented_and_every_operation_routed() -> None:
    """The admin app's routes and the document's operations are the same set.

    aiohttp adds a HEAD route beside each GET; HEAD is GET without a body, so it is implied.
    """
    app = admin_app()
    routes = {(r.method, r.resource.canonical) for r in app.router.routes() if r.resource}
    heads = {path for method, path in routes if method == "HEAD"}
    assert heads == {path for method, path in routes if method == "GET"}
    assert {(m, p) for m, p in routes if m != "HEAD"} == documented(openapi.document(app))


def test_a_route_without_an_operation_cannot_be_documented() -> None:
    """A handler added without ``@operation`` fails the document instead of going missing."""
    app = admin_app()

    async def undeclared(_request: web.Request) -> web.Response:
        return web.Response()

    app.router.add_get("/v1/undeclared", undeclared)
    with pytest.raises(LookupError, match="GET /v1/undeclared"):
        openapi.document(app)


def test_document_is_valid_openapi_3_1() -> None:
    """The document validates against the OpenAPI 3.1 meta-schema."""
    doc = openapi.document(admin_app())
    schemathesis.openapi.from_dict(doc).validate()
    assert doc["openapi"] == "3.1.0"


def test_response_schemas_come_from_the_models() -> None:
    """A credential answer's schema is the CredentialView model's: closed, every key required."""
    doc = openapi.document(admin_app())
    view = doc["components"]["schemas"]["CredentialView"]
    assert view["additionalProperties"] is False
    assert set(view["required"]) == set(view["properties"]) >= {"name", "version", "fields"}
    put = doc["paths"]["/v1/credentials/{name}"]["put"]
    for status in ("201", "200"):
        assert put["responses"][status]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/SavedCredential"
        }
    saved = doc["components"]["schemas"]["SavedCredential"]
    assert set(saved["required"]) == set(saved["properties"]) == {*view["properties"], "verification"}
    assert saved["properties"]["verification"]["enum"] == ["presence-only", "token", "probe"]
    pismo = doc["components"]["schemas"]["Saved"]
    assert pismo["properties"]["verification"] == saved["properties"]["verification"]
    issued = doc["components"]["schemas"]["IssuedKey"]
    assert "key" in issued["required"] and "hmac_key" not in issued["required"]


def test_browser_refusals_and_rate_limit_are_documented() -> None:
    """Every operation lists 421/403 browser codes; verify lists 429 with Retry-After."""
    doc = openapi.document(admin_app())
    for item in doc["paths"].values():
        for op in item.values():
            assert {"421", "403"} <= set(op["responses"])
    verify = doc["paths"]["/v1/credentials/{name}/verify"]["post"]["responses"]["429"]
    assert "Retry-After" in verify["headers"]


def test_error_codes_match_their_status() -> None:
    """Each documented error response pins codes whose table status is that response's."""
    doc = openapi.document(admin_app())
    for item in doc["paths"].values():
        for op in item.values():
            for status, response in op["responses"].items():
                schema = response.get("content", {}).get("application/json", {}).get("schema")
                if int(status) < 400 or "allOf" not in schema:  # /readyz's 503 is no error
                    continue
                codes = schema["allOf"][1]["properties"]["code"]["enum"]
                assert {CODES[c].status for c in codes} == {int(status)}


def test_health_listener_serves_only_the_probes() -> None:
    """The kubelet's listener routes /healthz and /readyz and nothing else."""
    app = build_health_app(Runtime(config.loads("{}", {})))
    paths = {r.resource.canonical for r in app.router.routes() if r.resource}
    assert paths == {"/healthz", "/readyz"}
