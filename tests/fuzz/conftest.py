"""The integration suite's sidecar fixtures, for the sample that goes over real sockets."""

from __future__ import annotations

from tests.integration.conftest import make_config, make_sidecar

__all__ = ["make_config", "make_sidecar"]
