"""Which schemes exist: the built-ins, listed explicitly, plus plugins from entry points.

The YAML names a scheme (``scheme: placetopay``), never a Python import path. A platform team
ships its own scheme as a package declaring an entry point in the ``sidecar.schemes`` group.
"""

from __future__ import annotations

from functools import cache
from importlib import import_module
from importlib.metadata import entry_points
from typing import Any

from sidecar.schemes.base import Scheme, SchemeOptions, UpstreamContext

_BUILTINS = {
    "placetopay": "sidecar.schemes.placetopay:PlaceToPay",
    "oauth2_client_credentials": "sidecar.schemes.oauth2:OAuth2ClientCredentials",
    "hmac": "sidecar.schemes.hmac:Hmac",
    "api_key": "sidecar.schemes.api_key:ApiKey",
    "jws": "sidecar.schemes.jws:Jws",
    "mtls": "sidecar.schemes.mtls:Mtls",
}


def _load(target: str) -> Any:
    module, _, attr = target.partition(":")
    return getattr(import_module(module), attr)


@cache
def builtin_schemes() -> dict[str, Any]:
    return {name: _load(target) for name, target in _BUILTINS.items()}


@cache
def _plugins() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group="sidecar.schemes") if ep.name not in _BUILTINS}


def scheme_class(name: str) -> Any:
    """Import only the scheme asked for: a broken plugin cannot break the built-ins."""
    if name in _BUILTINS:
        return _load(_BUILTINS[name])
    plugins = _plugins()
    if name not in plugins:
        known = sorted({*_BUILTINS, *plugins})
        raise KeyError(f"unknown scheme {name!r}; known: {', '.join(known)}")
    return plugins[name].load()


def build_scheme(specs: list[tuple[str, SchemeOptions]], upstream: UpstreamContext) -> Scheme:
    """One scheme, or a Composite applying several in order over one credential."""
    from sidecar.schemes.composite import Composite

    parts: list[Scheme] = [
        _checked(name, scheme_class(name)(options, upstream)) for name, options in specs
    ]
    return parts[0] if len(parts) == 1 else Composite(parts, upstream)


def _checked(name: str, scheme: Any) -> Scheme:
    """A plugin is loaded untyped, so the protocol is checked here, at config load, not later
    (a scheme without ``counters()`` would otherwise fail the first ``/metrics`` scrape)."""
    if not isinstance(scheme, Scheme):
        raise TypeError(f"scheme {name!r} does not implement the Scheme protocol (see SchemeBase)")
    return scheme
