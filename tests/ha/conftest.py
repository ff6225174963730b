"""One 3-node OpenBao raft cluster for the HA tests (about 10 s to form)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.ha.cluster import Cluster
from tests.integration.conftest import make_sidecar

__all__ = ["make_sidecar"]


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """Three `bao server` processes, initialised with one unseal key, all voters."""
    started = Cluster.start()
    yield started
    started.stop()
