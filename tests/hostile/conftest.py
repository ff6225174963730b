"""Fixtures for the hostile-input suite: a live sidecar served from a thread of its own."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sidecar.sandbox.openbao import OpenBao
from tests.hostile.live import LiveSidecar


@pytest.fixture
def live(openbao: OpenBao, prefix: str) -> Iterator[LiveSidecar]:
    """Admin and proxy listeners on real loopback ports, a recording peer behind the proxy."""
    sidecar = LiveSidecar(openbao.addr, prefix).start()
    yield sidecar
    sidecar.stop()
