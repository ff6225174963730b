"""The OpenAPI document: served as checked in, generated from the code, one-to-one with routes."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import schemathesis
from aiohttp import web

from sidecar import config
from sidecar.app import build_admin_app
from sidecar.runtime import Runtime

ROOT = Path(__file__).resolve().parents[2]
FILE = ROOT / "sidecar" / "openapi.json"
METHODS = {"get", "put", "post", "patch", "delete", "head", "options", "trace"}


def admin_app() -> web.Application:
    return build_admin_app(Runtime(config.loads("{}", {})), own_runtime=False)


def documented() -> set[tuple[str, str]]:
    doc = json.loads(FILE.read_text())
    return {
        (method.upper(), path)
        for path, item in doc["paths"].items()
        for method in item
        if method in METHODS
    }


async def test_served_document_is_the_file(aiohttp_client: Any) -> None:
    """GET /v1/openapi.json answers the package file byte for byte, as JSON."""
    client = await aiohttp_client(admin_app())
    r = await client.get("/v1/openapi.json")
    assert r.status == 200 and r.content_type == "application/json"
    assert await r.read() == FILE.read_bytes()


def test_every_route_is_documented_and_every_operation_routed() -> None:
    """The admin app's routes and the document's operations are the same set.

    aiohttp adds a HEAD route beside each GET; HEAD is GET without a body, so it is implied.
    """
    routes = {(r.method, r.resource.canonical) for r in admin_app().router.routes() if r.resource}
    heads = {path for method, path in routes if method == "HEAD"}
    assert heads == {path for method, path in routes if method == "GET"}
    assert {(m, p) for m, p in routes if m != "HEAD"} == documented()


def test_file_is_what_the_generator_writes() -> None:
    """scripts/gen_openapi.py renders exactly the checked-in file (run it after a change)."""
    spec = importlib.util.spec_from_file_location("gen_openapi", ROOT / "scripts/gen_openapi.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.render() == FILE.read_text()


def test_document_is_valid_openapi_3_1() -> None:
    """The document validates against the OpenAPI 3.1 meta-schema."""
    schema = schemathesis.openapi.from_path(FILE)
    schema.validate()
    assert json.loads(FILE.read_text())["openapi"] == "3.1.0"


def test_error_codes_match_their_status() -> None:
    """Each documented error response pins codes whose table status is that response's."""
    from sidecar.errors import CODES

    doc = json.loads(FILE.read_text())
    for item in doc["paths"].values():
        for op in item.values():
            for status, response in op["responses"].items():
                schema = response.get("content", {}).get("application/json", {}).get("schema")
                if int(status) < 400 or "allOf" not in schema:  # /readyz's 503 is no error
                    continue
                codes = schema["allOf"][1]["properties"]["code"]["enum"]
                assert {CODES[c].status for c in codes} == {int(status)}
