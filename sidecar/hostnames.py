"""Which host names interception may serve: DNS names only, never IP literals.

Kept apart from ``sidecar.ca`` so that the proxy can check names without importing
``cryptography`` (8 MiB and ~0.2 s at start) when interception is off.
"""

from __future__ import annotations

import ipaddress
import re

_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_DNS = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*$")


def is_dns_name(host: str) -> bool:
    """Interception is for DNS names only: an IP literal gets neither a leaf nor a tunnel."""
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return bool(_DNS.match(host)) and not host.replace(".", "").isdigit()
    return False
