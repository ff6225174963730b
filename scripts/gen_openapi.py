"""Generate ``sidecar/openapi.json``, the admin API's OpenAPI 3.1 document.

Why generated: request bodies come from the pydantic models the handlers validate with, and
each error response's ``code`` enum and HTTP status come from ``sidecar.errors.CODES``, so the
document cannot quietly drift from the code. Why checked in: it is package data served at
``GET /v1/openapi.json`` and a reviewable contract; ``tests/unit/test_openapi.py`` fails when the
file and this script disagree.

Usage: ``.venv/bin/python scripts/gen_openapi.py`` (write) or ``... --check`` (exit 1 if stale).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from sidecar.errors import CODES
from sidecar.handlers.credentials import PatchBody, PismoBody, PutBody
from sidecar.handlers.keys import IssueBody, KeyPatchBody

OUT = Path(__file__).resolve().parent.parent / "sidecar" / "openapi.json"
NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}$"
KEY_ID_PATTERN = r"^pk[0-9a-f]{16}$"
JSON = "application/json"

AUTH = ("SC1007",)
VAULT = ("SC3001", "SC3002", "SC3003", "SC3004")
BODY = ("SC1001", "SC1002", "SC1003", "SC1008")
# A name that is not one resolves elsewhere: empty -> no route (SC1005); "." -> another
# resource whose method set differs (SC1006).
NAMED = ("SC1004", "SC1005", "SC2001", "SC1006", *AUTH, *VAULT)

DESCRIPTION = """\
Admin API of the credential sidecar (local-only listener). JSON in and out; no response ever
holds a secret value.

Errors are `{"message": str, "code": "SCxxxx", "details"?: object}`; each response below lists
the codes it can carry. A method a path does not list answers 405 `SC1006` with an `Allow`
header (see `components.responses.MethodNotAllowed`); an unknown path answers 404 `SC1005`. Any
route may answer 500 `SC1000` on an internal error, which is always a bug. When `admin.token` is
configured every route except `/healthz` and `/readyz` needs `Authorization: Bearer <token>`
(401 `SC1007`). Every response carries `X-Request-Id` (the caller's, when it matches
`[A-Za-z0-9._-]{1,64}`, else a new one).
"""


def ref(kind: str, name: str) -> dict[str, str]:
    return {"$ref": f"#/components/{kind}/{name}"}


def model_schema(model: type[BaseModel], **extra: Any) -> dict[str, Any]:
    """A pydantic model's JSON Schema (2020-12, as OpenAPI 3.1 uses), titles dropped."""
    schema: dict[str, Any] = _untitled(model.model_json_schema())
    schema.update(extra)
    return schema


def _untitled(schema: Any) -> Any:
    if isinstance(schema, list):
        return [_untitled(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _untitled(v) for k, v in schema.items() if k not in ("title", "properties")}
    if "properties" in schema:
        out["properties"] = {k: _untitled(v) for k, v in schema["properties"].items()}
    return out


def error_responses(codes: tuple[str, ...]) -> dict[str, Any]:
    """Group codes by their HTTP status; each response pins ``code`` to that group."""
    by_status: dict[int, list[str]] = {}
    for code in codes:
        by_status.setdefault(CODES[code].status, []).append(code)
    out: dict[str, Any] = {}
    for status, group in sorted(by_status.items()):
        group = sorted(group)
        body = {
            "allOf": [ref("schemas", "Error"), {"properties": {"code": {"enum": group}}}],
        }
        text = "; ".join(f"`{c}` {CODES[c].message}" for c in group)
        headers: dict[str, Any] = {"X-Request-Id": ref("headers", "X-Request-Id")}
        if status == 405:
            headers["Allow"] = ref("headers", "Allow")
        out[str(status)] = {
            "description": text,
            "headers": headers,
            "content": {JSON: {"schema": body}},
        }
    return out


def ok(
    status: int, description: str, schema: dict[str, Any] | None, etag: bool = False
) -> dict[str, Any]:
    headers: dict[str, Any] = {"X-Request-Id": ref("headers", "X-Request-Id")}
    if etag:
        headers["ETag"] = ref("headers", "ETag")
    response: dict[str, Any] = {"description": description, "headers": headers}
    if schema is not None:
        response["content"] = {JSON: {"schema": schema}}
    return {str(status): response}


def text_ok(media_type: str, description: str) -> dict[str, Any]:
    return {
        "200": {
            "description": description,
            "headers": {"X-Request-Id": ref("headers", "X-Request-Id")},
            "content": {media_type: {"schema": {"type": "string"}}},
        }
    }


def operation(
    op_id: str,
    summary: str,
    responses: dict[str, Any],
    *,
    params: tuple[str, ...] = (),
    body: str | None = None,
    public: bool = False,
) -> dict[str, Any]:
    op: dict[str, Any] = {
        "operationId": op_id,
        "summary": summary,
        "parameters": [ref("parameters", p) for p in (*params, "X-Request-Id")],
        "responses": dict(sorted(responses.items())),
    }
    if body is not None:
        op["requestBody"] = {"required": True, "content": {JSON: {"schema": ref("schemas", body)}}}
    op["security"] = [] if public else [{}, {"adminToken": []}]
    return op


def paths() -> dict[str, Any]:
    view = ref("schemas", "Credential")
    cred = ("name",)
    return {
        "/healthz": {
            "get": operation(
                "healthz",
                "Liveness: the event loop answers",
                ok(200, "Alive", ref("schemas", "Health")),
                public=True,
            )
        },
        "/readyz": {
            "get": operation(
                "readyz",
                "Readiness: config loaded, cache warm and fresh, Vault session valid",
                {
                    **ok(200, "Ready", ref("schemas", "Readiness")),
                    **ok(503, "Not ready yet", ref("schemas", "Readiness")),
                },
                public=True,
            )
        },
        "/v1/status": {
            "get": operation(
                "status",
                "Why the sidecar is (not) ready: token TTL, cache age, last error code per loop",
                {**ok(200, "Status", ref("schemas", "Status")), **error_responses(AUTH)},
            )
        },
        "/metrics": {
            "get": operation(
                "metrics",
                "Prometheus metrics (text exposition format 0.0.4)",
                {**text_ok("text/plain", "Metrics"), **error_responses(AUTH)},
            )
        },
        "/v1/ca.pem": {
            "get": operation(
                "caPem",
                "The interception CA certificate(s), PEM; 404 when interception is off",
                {
                    **text_ok("application/x-pem-file", "CA bundle"),
                    **error_responses(("SC1005", *AUTH)),
                },
            )
        },
        "/v1/openapi.json": {
            "get": operation(
                "openapi",
                "This document",
                {**ok(200, "OpenAPI 3.1 document", {"type": "object"}), **error_responses(AUTH)},
            )
        },
        "/v1/credentials": {
            "get": operation(
                "listCredentials",
                "List credential metadata, optionally filtered",
                {
                    **ok(200, "Metadata of every matching credential", ref("schemas", "List")),
                    **error_responses(("SC1009", *AUTH, *VAULT)),
                },
                params=("provider", "environment", "enabled"),
            ),
            "post": operation(
                "pismoCreate",
                "Pismo-compatible create-or-replace, saved as <provider>-<type> (lowercased)",
                {
                    **ok(201, "Created", ref("schemas", "Saved")),
                    **ok(200, "Replaced", ref("schemas", "Saved")),
                    **error_responses(
                        (*BODY, "SC1004", "SC2002", "SC2004", "SC2005", "SC2006", *AUTH, *VAULT)
                    ),
                },
                body="PismoBody",
            ),
        },
        "/v1/credentials/{name}": {
            "put": operation(
                "putCredential",
                "Create or replace; the provider verifies the credential before it is saved",
                {
                    **ok(201, "Created", view, etag=True),
                    **ok(200, "Replaced", view, etag=True),
                    **error_responses(
                        (*BODY, *NAMED, "SC2002", "SC2003", "SC2004", "SC2005", "SC2006")
                    ),
                },
                params=(*cred, "If-Match"),
                body="PutBody",
            ),
            "get": operation(
                "getCredential",
                "Metadata and public fields; never a secret",
                {**ok(200, "The credential", view, etag=True), **error_responses(NAMED)},
                params=cred,
            ),
            "patch": operation(
                "patchCredential",
                "Change non-secret metadata: enabled, public fields, provider_data",
                {
                    **ok(200, "Changed", view, etag=True),
                    **error_responses((*BODY, *NAMED, "SC2002", "SC2003", "SC2004")),
                },
                params=(*cred, "If-Match"),
                body="PatchBody",
            ),
            "delete": operation(
                "deleteCredential",
                "Delete the credential",
                {**ok(204, "Deleted", None), **error_responses(NAMED)},
                params=cred,
            ),
        },
        "/v1/credentials/{name}/verify": {
            "post": operation(
                "verifyCredential",
                "Compare one secret field with the stored one (transit HMAC, no decryption)",
                {
                    **ok(200, "Compared", ref("schemas", "Verified")),
                    **error_responses((*BODY, *NAMED)),
                },
                params=cred,
                body="VerifyBody",
            )
        },
        "/v1/credentials/{name}/versions": {
            "get": operation(
                "credentialVersions",
                "KV v2 version history (metadata only)",
                {**ok(200, "Versions", ref("schemas", "Versions")), **error_responses(NAMED)},
                params=cred,
            )
        },
        **key_paths(),
    }


def key_paths() -> dict[str, Any]:
    """Proxy keys: the key and HMAC key appear in the 201 of issueKey only."""
    key = ref("schemas", "ProxyKey")
    one = ("name", "key_id")
    return {
        "/v1/credentials/{name}/keys": {
            "post": operation(
                "issueKey",
                "Issue a proxy key; the key (and HMAC key) are shown in this answer only",
                {
                    **ok(201, "Issued", ref("schemas", "IssuedKey")),
                    **error_responses((*BODY, *NAMED)),
                },
                params=("name",),
                body="IssueBody",
            ),
            "get": operation(
                "listKeys",
                "Key ids, permissions and flags; never key material",
                {**ok(200, "Keys", ref("schemas", "KeyList")), **error_responses(NAMED)},
                params=("name",),
            ),
        },
        "/v1/credentials/{name}/keys/{key_id}": {
            "get": operation(
                "getKey",
                "One key's status; never key material",
                {**ok(200, "The key", key), **error_responses((*NAMED, "SC5006"))},
                params=one,
            ),
            "patch": operation(
                "patchKey",
                "Enable or disable; effective on the next proxied request",
                {
                    **ok(200, "Changed", key),
                    **error_responses((*BODY, *NAMED, "SC2002", "SC5006")),
                },
                params=one,
                body="KeyPatchBody",
            ),
            "delete": operation(
                "deleteKey",
                "Delete the key; effective on the next proxied request",
                {**ok(204, "Deleted", None), **error_responses((*NAMED, "SC5006"))},
                params=one,
            ),
        },
    }


def key_schemas() -> dict[str, Any]:
    stamp = {"type": "string", "format": "date-time"}
    view: dict[str, Any] = {
        "key_id": {"type": "string", "pattern": KEY_ID_PATTERN},
        "credential": {"type": "string", "pattern": NAME_PATTERN},
        "permissions": {"type": "array", "items": {"type": "string"}},
        "hmac_enabled": {"type": "boolean"},
        "enabled": {"type": "boolean"},
        "expires_at": {"type": ["string", "null"]},
        "created_at": stamp,
        "updated_at": stamp,
        "last_used_at": {
            "type": ["string", "null"],
            "description": "last use seen by this replica since it started",
        },
    }
    secrets = {
        "key": {"type": "string", "pattern": r"^sck_pk[0-9a-f]{16}_[A-Za-z0-9_-]{43}$"},
        "hmac_key": {"type": "string"},
    }
    return {
        "IssueBody": model_schema(IssueBody),
        "KeyPatchBody": model_schema(KeyPatchBody),
        "ProxyKey": {
            "type": "object",
            "additionalProperties": False,
            "required": list(view),
            "properties": view,
        },
        "IssuedKey": {
            "type": "object",
            "additionalProperties": False,
            "required": [*view, "key"],
            "properties": {**view, **secrets},
        },
        "KeyList": {
            "type": "object",
            "additionalProperties": False,
            "required": ["credential", "keys"],
            "properties": {
                "credential": {"type": "string", "pattern": NAME_PATTERN},
                "keys": {"type": "array", "items": ref("schemas", "ProxyKey")},
            },
        },
    }


def schemas() -> dict[str, Any]:
    string_map = {"type": "object", "additionalProperties": {"type": "string"}}
    stamp = {"type": "string", "format": "date-time"}
    return {
        "Error": {
            "type": "object",
            "required": ["message", "code"],
            "additionalProperties": False,
            "properties": {
                "message": {"type": "string"},
                "code": {"type": "string", "pattern": r"^SC\d{4}$"},
                "details": {"type": "object"},
            },
        },
        "PutBody": model_schema(PutBody),
        "PismoBody": model_schema(PismoBody),
        "PatchBody": model_schema(PatchBody, minProperties=1),
        "VerifyBody": {
            "description": 'Exactly one secret field: {"<field>": "<value>"}',
            "type": "object",
            "minProperties": 1,
            "maxProperties": 1,
            "additionalProperties": {"type": "string"},
        },
        "Credential": {
            "type": "object",
            "additionalProperties": False,
            "required": [
                *("name", "upstream", "scheme", "environment", "enabled", "fields"),
                *("secret_fields", "provider_data", "type", "version", "created_at"),
                "updated_at",
            ],
            "properties": {
                "name": {"type": "string", "pattern": NAME_PATTERN},
                "upstream": {"type": "string"},
                "scheme": {"type": "string"},
                "environment": {"enum": ["sandbox", "live"]},
                "enabled": {"type": "boolean"},
                "fields": {**string_map, "description": "public fields only"},
                "secret_fields": {"type": "array", "items": {"type": "string"}},
                "provider_data": {"type": "object"},
                "type": {"type": ["string", "null"]},
                "version": {"type": "integer", "minimum": 1},
                "created_at": stamp,
                "updated_at": stamp,
            },
        },
        "List": {
            "type": "object",
            "additionalProperties": False,
            "required": ["credentials"],
            "properties": {"credentials": {"type": "array", "items": ref("schemas", "Credential")}},
        },
        "Saved": {
            "type": "object",
            "additionalProperties": False,
            "required": ["message"],
            "properties": {
                "message": {"const": "Credential saved"},
                "proxy_value": {
                    "type": "string",
                    "description": "a proxy key with every permission, when the upstream "
                    "requires proxy keys; shown in this answer only",
                },
            },
        },
        "Verified": {
            "type": "object",
            "additionalProperties": False,
            "required": ["name", "is_valid", "message"],
            "properties": {
                "name": {"type": "string", "pattern": NAME_PATTERN},
                "is_valid": {"type": "boolean"},
                "message": {"type": "string"},
            },
        },
        "Versions": {
            "type": "object",
            "additionalProperties": False,
            "required": ["name", "versions"],
            "properties": {
                "name": {"type": "string", "pattern": NAME_PATTERN},
                "versions": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["version", "created_at", "deleted_at", "destroyed", "current"],
                        "properties": {
                            "version": {"type": "integer", "minimum": 1},
                            "created_at": {"type": ["string", "null"]},
                            "deleted_at": {"type": ["string", "null"]},
                            "destroyed": {"type": "boolean"},
                            "current": {"type": "boolean"},
                        },
                    },
                },
            },
        },
        "Health": {
            "type": "object",
            "additionalProperties": False,
            "required": ["status"],
            "properties": {"status": {"const": "ok"}},
        },
        **key_schemas(),
        "Readiness": {
            "type": "object",
            "additionalProperties": False,
            "required": ["ready", "checks"],
            "properties": {
                "ready": {"type": "boolean"},
                "checks": {
                    "type": "object",
                    "additionalProperties": {"type": "boolean"},
                    "required": ["config_loaded", "vault_authenticated", "cache_loaded"],
                },
            },
        },
        "Status": {
            "type": "object",
            "required": ["ready", "checks", "vault", "cache", "last_errors", "errors"],
            "properties": {
                "ready": {"type": "boolean"},
                "checks": {"type": "object", "additionalProperties": {"type": "boolean"}},
                "vault": {"type": "object", "description": "the Vault session, no secret"},
                "cache": {"type": "object", "description": "age (s), max_stale, credentials"},
                "last_errors": {"type": "object", "additionalProperties": {"type": "string"}},
                "errors": {"type": "object", "additionalProperties": {"type": "integer"}},
            },
        },
    }


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


def document() -> dict[str, Any]:
    error_json = {JSON: {"schema": ref("schemas", "Error")}}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Credential sidecar admin API",
            "version": "1",
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
            "description": DESCRIPTION,
        },
        "paths": paths(),
        "components": {
            "schemas": schemas(),
            "parameters": parameters(),
            "headers": {
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
            },
            "responses": {
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
            },
            "securitySchemes": {
                "adminToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "Required only when admin.token is configured",
                }
            },
        },
    }


def render() -> str:
    return json.dumps(document(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if not OUT.exists() or OUT.read_text() != text:
            print(f"{OUT} is stale: run scripts/gen_openapi.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
