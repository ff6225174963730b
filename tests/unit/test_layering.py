"""DESIGN.md's dependency rule for the engine's request type, checked on the source.

Proxy keys and the audit trail know a request through small protocols of their own
(``proxykeys/request.py``, ``audit.Audited``), so neither may import the proxy engine; and the
engine never imports the admin handlers, so the proxy role loads no write route.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import sidecar

ROOT = Path(sidecar.__file__).parent


def imported(path: Path) -> set[str]:
    """Every module a file imports, at any level (``TYPE_CHECKING`` blocks included)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


@pytest.mark.parametrize(
    "path", [*sorted((ROOT / "proxykeys").glob("*.py")), ROOT / "audit.py"], ids=lambda p: p.name
)
def test_proxy_keys_and_audit_do_not_import_the_engine(path: Path) -> None:
    """No module of proxy keys, nor the audit trail, imports ``sidecar.proxy``."""
    found = imported(path)
    assert not {m for m in found if m == "sidecar.proxy" or m.startswith("sidecar.proxy.")}


@pytest.mark.parametrize("path", sorted((ROOT / "proxy").glob("*.py")), ids=lambda p: p.name)
def test_the_engine_imports_no_handler_and_no_aiohttp_server(path: Path) -> None:
    """The engine imports neither ``sidecar.handlers`` nor ``aiohttp.web``: one engine, no app."""
    found = imported(path)
    assert not {m for m in found if m.startswith(("sidecar.handlers", "aiohttp.web"))}


_NOT_FOR_SCHEMES = (
    "sidecar.proxy",
    "sidecar.upstreams",
    "sidecar.tlskeys",
    "sidecar.vault",
    "sidecar.store",
    "sidecar.handlers",
    "ssl",
)


@pytest.mark.parametrize("path", sorted((ROOT / "schemes").glob("*.py")), ids=lambda p: p.name)
def test_schemes_import_no_wire_no_tls_pool_no_vault(path: Path) -> None:
    """A scheme knows OutboundRequest and Credential only: not the engine, the upstream pools or
    their TLS contexts (``mtls`` checks PEM with ``cryptography``; tlskeys loads it), Vault or
    a handler."""
    found = imported(path)
    banned = {m for m in found for b in _NOT_FOR_SCHEMES if m == b or m.startswith(b + ".")}
    assert banned == set()
