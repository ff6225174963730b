"""``GET /v1/openapi.json``: the OpenAPI 3.1 document, generated from the app's own routes.

Why generated at start and not checked in: the routes, their declared operations
(``sidecar.handlers.contract``) and the pydantic models are the contract; rendering them from
the running app means a role that serves fewer routes documents exactly those, and nothing
can drift. Request and response schemas come from the models; each error response's ``code``
enum and status come from ``sidecar.errors.CODES``.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web
from pydantic import BaseModel

from sidecar.errors import CODES
from sidecar.handlers.contract import OPERATIONS, Ok, Operation, operation
from sidecar.handlers.models import ErrorBody
from sidecar.record import NAME_PATTERN

routes = web.RouteTableDef()
JSON = "application/json"
KEY_ID_PATTERN = r"^pk[0-9a-f]{16}$"
_RENDERED: dict[tuple[tuple[str, str, int], ...], bytes] = {}

DESCRIPTION = """\
Admin API of the credential sidecar. JSON in and out; no response ever holds a secret value.

Errors are `{"message": str, "code": "SCxxxx", "details"?: object}`; each response below lists
the codes it can carry. A method a path does not list answers 405 `SC1006` with an `Allow`
header (see `components.responses.MethodNotAllowed`); an unknown path answers 404 `SC1005`. Any
route may answer 500 `SC1000` on an internal error, which is always a bug. When `admin.token` is
configured every route except `/healthz` and `/readyz` needs `Authorization: Bearer <token>`
(401 `SC1007`). Every response carries `X-Request-Id` (the caller's, when it matches
`[A-Za-z0-9._-]{1,64}`, else a new one).

Browser-proof: a request whose `Host` is not loopback, `localhost` or an `admin.hosts` name is
421 `SC1015`; one carrying an `Origin` not in `listen.allowed_origins`, or
`Sec-Fetch-Site: cross-site|same-site`, is 403 `SC1016`/`SC1017`; a body needs
`Content-Type: application/json` (415 `SC1008`, also when the header is missing), except on
webhook-signature verify, whose body is a provider's raw bytes of any type. No CORS header is
ever sent.
"""


def ref(kind: str, name: str) -> dict[str, str]:
    return {"$ref": f"#/components/{kind}/{name}"}


def _untitled(schema: Any) -> Any:
    """Pydantic's titles repeat the property names; dropped (property *names* are kept)."""
    if isinstance(schema, list):
        return [_untitled(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _untitled(v) for k, v in schema.items() if k not in ("title", "properties")}
    if "properties" in schema:
        out["properties"] = {k: _untitled(v) for k, v in schema["properties"].items()}
    return out


class Components:
    """Collects model schemas under ``components.schemas`` as operations reference them."""

    def __init__(self) -> None:
        self.schemas: dict[str, Any] = {}

    def model(self, model: type[BaseModel], mode: str = "serialization") -> dict[str, str]:
        if model.__name__ not in self.schemas:
            schema = model.model_json_schema(
                ref_template="#/components/schemas/{model}",
                mode=mode,  # type: ignore[arg-type]
            )
            for name, sub in schema.pop("$defs", {}).items():
                self.schemas.setdefault(name, _untitled(sub))
            self.schemas[model.__name__] = _untitled(schema)
        return ref("schemas", model.__name__)

    def body(self, body: Any) -> dict[str, Any] | None:
        if body is None:
            return None
        if isinstance(body, str):
            return {body: {"schema": {"type": "string"}}}
        schema = self.model(body) if isinstance(body, type) else body
        return {JSON: {"schema": schema}}


def error_responses(codes: tuple[str, ...], headers: tuple[str, ...]) -> dict[str, Any]:
    """Group codes by their HTTP status; each response pins ``code`` to that group."""
    by_status: dict[int, list[str]] = {}
    for code in codes:
        by_status.setdefault(CODES[code].status, []).append(code)
    out: dict[str, Any] = {}
    for status, group in sorted(by_status.items()):
        group = sorted(group)
        body = {"allOf": [ref("schemas", "ErrorBody"), {"properties": {"code": {"enum": group}}}]}
        extra: dict[str, Any] = {"X-Request-Id": ref("headers", "X-Request-Id")}
        if status == 405:
            extra["Allow"] = ref("headers", "Allow")
        if status == 429:
            extra.update({h: ref("headers", h) for h in headers})
        out[str(status)] = {
            "description": "; ".join(f"`{c}` {CODES[c].message}" for c in group),
            "headers": extra,
            "content": {JSON: {"schema": body}},
        }
    return out


def success(ok: Ok, parts: Components) -> dict[str, Any]:
    headers: dict[str, Any] = {"X-Request-Id": ref("headers", "X-Request-Id")}
    if ok.etag:
        headers["ETag"] = ref("headers", "ETag")
    response: dict[str, Any] = {"description": ok.description, "headers": headers}
    content = parts.body(ok.body)
    if content is not None:
        response["content"] = content
    return response


def render_operation(op: Operation, parts: Components) -> dict[str, Any]:
    responses = {str(ok.status): success(ok, parts) for ok in op.ok}
    responses.update(error_responses(op.codes(), op.headers))
    out: dict[str, Any] = {
        "operationId": op.op_id,
        "summary": op.summary,
        "parameters": [ref("parameters", p) for p in (*op.params, "X-Request-Id")],
        "responses": dict(sorted(responses.items())),
    }
    if op.body is not None:
        schema = parts.model(op.body, mode="validation")
        out["requestBody"] = {"required": True, "content": {JSON: {"schema": schema}}}
    if op.raw_body:
        raw = {"*/*": {"schema": {"type": "string", "format": "binary"}}}
        out["requestBody"] = {"required": True, "content": raw}
    out["security"] = [] if op.public else [{}, {"adminToken": []}]
    return out


def document(app: web.Application) -> dict[str, Any]:
    """The document of exactly the routes ``app`` serves (HEAD is implied by GET)."""
    parts = Components()
    parts.model(ErrorBody)
    paths: dict[str, dict[str, Any]] = {}
    for route in app.router.routes():
        if route.method == "HEAD" or route.resource is None:
            continue
        op = OPERATIONS.get(route.handler)
        if op is None:
            raise LookupError(f"{route.method} {route.resource.canonical} declares no operation")
        item = paths.setdefault(route.resource.canonical, {})
        item[route.method.lower()] = render_operation(op, parts)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Credential sidecar admin API",
            "version": "1",
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
            "description": DESCRIPTION,
        },
        "paths": paths,
        "components": {
            "schemas": dict(sorted(parts.schemas.items())),
            "parameters": parameters(),
            "headers": headers(),
            "responses": shared_responses(),
            "securitySchemes": {
                "adminToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "Required only when admin.token is configured",
                }
            },
        },
    }


def rendered(app: web.Application) -> bytes:
    """Rendered once per set of routes (the router is frozen once the app runs)."""
    key = tuple(
        (r.method, r.resource.canonical, id(r.handler))
        for r in app.router.routes()
        if r.resource is not None
    )
    text = _RENDERED.get(key)
    if text is None:
        text = _RENDERED[key] = (json.dumps(document(app), indent=2) + "\n").encode()
    return text


@routes.get("/v1/openapi.json")
@operation(
    "openapi",
    "This document, generated from the routes this listener serves",
    Ok(200, "OpenAPI 3.1 document", {"type": "object"}),
)
async def openapi(request: web.Request) -> web.Response:
    return web.Response(body=rendered(request.app), content_type="application/json")


def parameters() -> dict[str, Any]:
    def query(name: str, schema: dict[str, Any], text: str) -> dict[str, Any]:
        return {
            "name": name,
            "in": "query",
            "required": False,
            "schema": schema,
            "description": text,
        }

    return {
        "name": {
            "name": "name",
            "in": "path",
            "required": True,
            "schema": {"type": "string", "pattern": NAME_PATTERN},
        },
        "key_id": {
            "name": "key_id",
            "in": "path",
            "required": True,
            "schema": {"type": "string", "pattern": KEY_ID_PATTERN},
        },
        "If-Match": {
            "name": "If-Match",
            "in": "header",
            "required": False,
            "description": "Write only if the current version is this one (else 412 SC2003)",
            "schema": {"type": "string", "pattern": r'^(W/)?"?[0-9]{1,18}"?$'},
        },
        "X-Request-Id": {
            "name": "X-Request-Id",
            "in": "header",
            "required": False,
            "description": "Echoed back when it matches; otherwise a new id is made",
            "schema": {"type": "string"},
        },
        "provider": query("provider", {"type": "string"}, "upstream name (case-insensitive)"),
        "environment": query("environment", {"enum": ["sandbox", "live"]}, "environment"),
        "enabled": query(
            "enabled",
            {
                "type": "string",
                "pattern": "^([Tt][Rr][Uu][Ee]|[Ff][Aa][Ll][Ss][Ee]|[Yy][Ee][Ss]|[Nn][Oo]|1|0)$",
            },
            "true/false, yes/no or 1/0, any case",
        ),
    }


def headers() -> dict[str, Any]:
    return {
        "ETag": {
            "description": "The credential's version, quoted",
            "required": True,
            "schema": {"type": "string", "pattern": r'^"[0-9]+"$'},
        },
        "X-Request-Id": {
            "description": "Request id for log correlation",
            "required": True,
            "schema": {"type": "string", "pattern": r"^[A-Za-z0-9._-]{1,64}$"},
        },
        "Allow": {
            "description": "The methods the path supports",
            "required": True,
            "schema": {"type": "string"},
        },
        "Retry-After": {
            "description": "Seconds until another attempt is allowed",
            "required": True,
            "schema": {"type": "string", "pattern": r"^[0-9]+$"},
        },
    }


def shared_responses() -> dict[str, Any]:
    error_json = {JSON: {"schema": ref("schemas", "ErrorBody")}}
    return {
        "MethodNotAllowed": {
            "description": "`SC1006`: the path exists but not with this method",
            "headers": {
                "Allow": ref("headers", "Allow"),
                "X-Request-Id": ref("headers", "X-Request-Id"),
            },
            "content": error_json,
        },
        "NoSuchRoute": {
            "description": "`SC1005`: no route has this path",
            "headers": {"X-Request-Id": ref("headers", "X-Request-Id")},
            "content": error_json,
        },
    }
