"""Route metadata, declared at the route: what ``/v1/openapi.json`` is generated from.

Each admin handler carries an :func:`operation` decorator beside its ``@routes.<method>``: a
summary, the request model, the response models by status, and the error codes it can answer.
``sidecar.handlers.openapi`` walks the app's router and renders the routes it finds; a route
without an operation fails the build of the document, so no route goes undocumented.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel

H = TypeVar("H", bound=Callable[..., Any])
# A response body: a model, a media type whose body is text, or a literal JSON Schema.
Body = type[BaseModel] | str | dict[str, Any] | None

GUARD = ("SC1015", "SC1016", "SC1017")  # every listener refuses what a web page sends
AUTH = ("SC1007",)
VAULT = ("SC3001", "SC3002", "SC3003", "SC3004")
BODY = ("SC1001", "SC1002", "SC1003", "SC1008")
# A name that is not one resolves elsewhere: empty -> no route (SC1005); "." -> another
# resource whose method set differs (SC1006).
NAMED = ("SC1004", "SC1005", "SC2001", "SC1006", *VAULT)


@dataclass(frozen=True, slots=True)
class Ok:
    """One success status: its description, body and whether it carries ``ETag``."""

    status: int
    description: str
    body: Body = None
    etag: bool = False


@dataclass(frozen=True, slots=True)
class Operation:
    op_id: str
    summary: str
    ok: tuple[Ok, ...]
    errors: tuple[str, ...] = ()
    params: tuple[str, ...] = ()
    body: type[BaseModel] | None = None
    public: bool = False
    headers: tuple[str, ...] = ()  # extra response headers on errors (e.g. Retry-After)
    # The body is a provider's raw bytes of any media type (webhook verify): not JSON-only.
    raw_body: bool = False

    def codes(self) -> tuple[str, ...]:
        """Declared codes plus those every route of its kind can answer."""
        extra = (*GUARD, *(() if self.public else AUTH), *(BODY if self.body else ()))
        return tuple(dict.fromkeys((*self.errors, *extra)))


OPERATIONS: dict[Callable[..., Any], Operation] = {}


def operation(
    op_id: str,
    summary: str,
    *ok: Ok,
    errors: tuple[str, ...] = (),
    params: tuple[str, ...] = (),
    body: type[BaseModel] | None = None,
    public: bool = False,
    headers: tuple[str, ...] = (),
    raw_body: bool = False,
) -> Callable[[H], H]:
    """Attach the operation to the handler (put it under ``@routes.<method>(...)``)."""

    def mark(handler: H) -> H:
        OPERATIONS[handler] = Operation(
            op_id, summary, ok, errors, params, body, public, headers, raw_body
        )
        return handler

    return mark
