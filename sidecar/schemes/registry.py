"""Which schemes exist: the built-ins, listed explicitly, plus plugins from entry points.

The YAML names a scheme (``scheme: placetopay``), never a Python import path. A platform team
ships its own scheme as a package declaring an entry point in the ``sidecar.schemes`` group.
"""

from __future__ import annotations

from functools import cache
from importlib import import_module
from importlib.metadata import entry_points
from typing import Any

from sidecar.schemes.base import SchemeOptions, UpstreamContext

_BUILTINS = {
    "placetopay": "sidecar.schemes.placetopay:PlaceToPay",
    "oauth2_client_credentials": "sidecar.schemes.oauth2:OAuth2ClientCredentials",
    "hmac": "sidecar.schemes.hmac:Hmac",
    "api_key": "sidecar.schemes.api_key:ApiKey",
}


def _load(target: str) -> Any:
    module, _, attr = target.partition(":")
    return getattr(import_module(module), attr)


@cache
def builtin_schemes() -> dict[str, Any]:
    return {name: _load(target) for name, target in _BUILTINS.items()}


@cache
def all_schemes() -> dict[str, Any]:
    """Built-ins first; a plugin may add a name but never replace a built-in."""
    found = dict(builtin_schemes())
    for ep in entry_points(group="sidecar.schemes"):
        if ep.name not in found:
            found[ep.name] = ep.load()
    return found


def scheme_class(name: str) -> Any:
    schemes = all_schemes()
    if name not in schemes:
        raise KeyError(f"unknown scheme {name!r}; known: {', '.join(sorted(schemes))}")
    return schemes[name]


def build_scheme(specs: list[tuple[str, SchemeOptions]], upstream: UpstreamContext) -> Any:
    """One scheme, or a Composite applying several in order over one credential."""
    from sidecar.schemes.composite import Composite

    parts = [scheme_class(name)(options, upstream) for name, options in specs]
    return parts[0] if len(parts) == 1 else Composite(parts, upstream)
