"""Unit helpers: credentials and requests built in memory, so scheme tests need no Vault.

Plain functions rather than fixtures, because test modules use them for module-level
constants (``from tests.unit.conftest import credential``), as the other suites do.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

from multidict import CIMultiDict
from yarl import URL

from sidecar.schemes.base import Credential, OutboundRequest


def credential(
    fields: Mapping[str, str] | None = None,
    secrets: Mapping[str, str] | None = None,
    *,
    name: str = "cred",
    version: int = 1,
) -> Credential:
    """A decrypted credential as the proxy would hold it."""
    stamp = datetime(2024, 1, 1, tzinfo=UTC)
    return Credential(
        name=name,
        upstream="up",
        scheme="test",
        environment="sandbox",
        enabled=True,
        fields=dict(fields or {}),
        secrets=dict(secrets or {}),
        provider_data={},
        version=version,
        created_at=stamp,
        updated_at=stamp,
    )


def outbound(
    method: str = "GET",
    url: str = "https://provider.test/v1/x",
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
) -> OutboundRequest:
    """An outbound request; ``url`` is taken as already percent-encoded, as on the wire."""
    return OutboundRequest(method, URL(url, encoded=True), CIMultiDict(headers or {}), body)
