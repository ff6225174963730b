"""Browser-proof listeners: refuse what a web page on the same machine could send.

Why: a page the developer opens can make the browser send requests to any loopback port
(``fetch(url, {mode: "no-cors"})``, a form post), and with DNS rebinding it can even read the
answers, because the browser then believes ``evil.example:8099`` is the page's own origin. Two
facts of what a browser sends stop both, whatever the route:

- ``Host``: a rebinding page's requests carry *its* name (``evil.example``), never a loopback
  literal, ``localhost`` or a name the operator configured. Refused with 421.
- ``Origin`` / ``Sec-Fetch-Site``: every cross-origin ``fetch``/form POST carries an ``Origin``
  (``null`` from sandboxed frames and some redirects), and browsers since 2020 add
  ``Sec-Fetch-Site: cross-site|same-site`` even to navigations. The sidecar's clients (apps,
  SDKs, curl, operators' tools) send neither. Refused with 403 unless the origin is allowed.

A request without ``Host`` (HTTP/1.0 tools) is not a browser's and passes the Host check.
Pure functions only: the listeners call :func:`check` with what they read.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Protocol

from sidecar.errors import SidecarError

if TYPE_CHECKING:
    from multidict import CIMultiDict, CIMultiDictProxy

    from sidecar.runtime import Runtime

# reg-name (letters, digits, dot, hyphen, underscore) or a bracketed IPv6 literal, then a port.
_HOST = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(?::([0-9]{1,5}))?\Z")
_REFUSED_SITES = frozenset({"cross-site", "same-site"})


@dataclass(frozen=True, slots=True)
class Allow:
    """What one listener accepts: extra Host names (lower case, no port) and origins."""

    hosts: frozenset[str] = frozenset()
    origins: frozenset[str] = frozenset()

    @classmethod
    def build(cls, hosts: Iterable[str], origins: Iterable[str]) -> Allow:
        return cls(
            frozenset(h.strip().lower() for h in hosts),
            frozenset(normal_origin(o) for o in origins),
        )


def normal_origin(origin: str) -> str:
    """``HTTP://Admin.Example/`` and ``http://admin.example`` are one origin."""
    return origin.strip().rstrip("/").lower()


@lru_cache(maxsize=1024)
def host_name(header: str) -> str | None:
    """The name part of a Host header, lower case; None when it is no valid host[:port]."""
    match = _HOST.match(header.strip())
    if match is None:
        return None
    port = match.group(2)
    if port is not None and int(port) > 65535:
        return None
    return match.group(1).lower()


@lru_cache(maxsize=1024)
def is_local_name(name: str) -> bool:
    """``localhost`` or a loopback literal (127.0.0.0/8, ``[::1]``), any port."""
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name.strip("[]")).is_loopback
    except ValueError:
        return False


def check_host(header: str | None, allow: Allow) -> None:
    """SC1015 unless Host names loopback, ``localhost`` or one of ``allow.hosts``."""
    if header is None:
        return
    name = host_name(header)
    if name is not None and (is_local_name(name) or name in allow.hosts):
        return
    raise SidecarError("SC1015", "Host is not a name this listener serves (421)")


def check_origin(origin: str | None, fetch_site: str | None, allow: Allow) -> None:
    """SC1016 for an Origin not allowed (``null`` included); SC1017 for a cross-site fetch.

    An allowed Origin wins over ``Sec-Fetch-Site``: an operator's own web tool on another
    origin is cross-site by definition.
    """
    if origin is not None:
        if normal_origin(origin) in allow.origins and origin.strip() != "null":
            return
        raise SidecarError("SC1016", "Origin is not on listen.allowed_origins")
    if fetch_site is not None and fetch_site.strip().lower() in _REFUSED_SITES:
        raise SidecarError("SC1017")


class Headers(Protocol):
    def get(self, key: str, /) -> str | None: ...


def check(headers: Headers, allow: Allow, *, host: bool = True) -> None:
    """Both checks on one request's headers; ``host=False`` for the kubelet's health listener."""
    if host:
        check_host(headers.get("Host"), allow)
    check_origin(headers.get("Origin"), headers.get("Sec-Fetch-Site"), allow)


class _Request(Protocol):
    @property
    def headers(self) -> CIMultiDictProxy[str] | CIMultiDict[str]: ...


def check_proxy(rt: Runtime, request: _Request) -> None:
    """The proxy listener: loopback, ``localhost`` or a configured upstream's host names.

    Upstream names count because forward-proxy and intercepted requests carry the provider's
    name in Host; a page cannot rebind a provider's DNS name to the app's loopback.
    """
    headers = request.headers
    header = headers.get("Host")
    if header is not None:
        name = host_name(header)
        if name is None or not (
            is_local_name(name) or any(name in up.hosts for up in rt.upstreams.values())
        ):
            raise SidecarError("SC1015", "Host is not loopback or a configured upstream host")
    if "Origin" in headers or "Sec-Fetch-Site" in headers:  # never, from an app or SDK
        allow = Allow.build((), rt.config.listen.allowed_origins)
        check_origin(headers.get("Origin"), headers.get("Sec-Fetch-Site"), allow)
