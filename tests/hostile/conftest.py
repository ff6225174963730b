"""Fixtures for the hostile-input suite: a live sidecar served from a thread of its own."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sidecar.sandbox.openbao import OpenBao
from tests.hostile.live import SUMMARY, LiveSidecar


@pytest.fixture
def live(openbao: OpenBao, prefix: str) -> Iterator[LiveSidecar]:
    """Admin and proxy listeners on real loopback ports, a recording peer behind the proxy."""
    sidecar = LiveSidecar(openbao.addr, prefix).start()
    yield sidecar
    sidecar.stop()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print the fuzzers' counts in the summary, where output capture cannot hide them."""
    lines = terminalreporter.config.stash.get(SUMMARY, [])
    if lines:
        terminalreporter.section("hostile input")
        for line in lines:
            terminalreporter.write_line(line)
