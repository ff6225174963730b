"""Suite-wide fixtures: one real OpenBao server per session, isolated prefixes per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sidecar.sandbox.openbao import OpenBao, unique_prefix


@pytest.fixture(scope="session")
def openbao() -> Iterator[OpenBao]:
    """A real OpenBao dev server with transit enabled, shared by the session."""
    server = OpenBao().start()
    yield server
    server.stop()


@pytest.fixture
def prefix() -> str:
    """A KV prefix of this test's own, so tests never see each other's records."""
    return unique_prefix()
