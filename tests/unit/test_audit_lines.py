"""Audit and access lines are logged at the end of the loop turn, in order, and never lost."""

from __future__ import annotations

import asyncio
import time

import pytest
from structlog.testing import capture_logs

from sidecar import audit


def _spend(path: str) -> audit.Spend:
    return audit.Spend("GET", path, time.perf_counter(), "pay", "pay", 3)


async def test_lines_wait_for_the_end_of_the_turn_and_keep_their_order() -> None:
    """Nothing is rendered inside the request's turn; the next turn logs all of it, in order."""
    with capture_logs() as logs:
        for i in range(5):
            audit._write(_spend("/v1/" + "abcde"[i]), 200 + i, None)
        assert logs == []
        await asyncio.sleep(0)
    assert [e["status"] for e in logs] == [200, 201, 202, 203, 204]
    assert [e["path_template"] for e in logs] == [f"/v1/{c}" for c in "abcde"]
    assert all(e["event"] == "proxy_request" and e["credential_version"] == 3 for e in logs)


async def test_latency_is_measured_when_the_request_ends_not_when_logged() -> None:
    """A slow turn after the request does not inflate the latency the line reports."""
    spend = _spend("/v1/x")
    with capture_logs() as logs:
        audit._write(spend, 200, None)
        time.sleep(0.05)  # the rest of the turn is busy
        await asyncio.sleep(0)
    assert logs[0]["latency_ms"] < 50


def test_without_a_loop_lines_are_logged_at_once() -> None:
    """A synchronous caller gets its line immediately."""
    with capture_logs() as logs:
        audit._write(_spend("/v1/sync"), 204, "SC4001")
    assert [(e["status"], e["code"]) for e in logs] == [(204, "SC4001")]


def test_a_loop_that_ends_before_flushing_loses_nothing() -> None:
    """Lines left by a loop that stopped mid-turn are logged by the next loop's first line."""

    async def leave_a_line() -> None:
        audit._write(_spend("/v1/first"), 200, None)

    with capture_logs() as logs:
        loop = asyncio.new_event_loop()
        task = loop.create_task(leave_a_line())
        loop.call_soon(loop.stop)  # the loop stops before the turn that would flush
        loop.run_forever()
        assert task.done()
        loop.close()
        assert logs == []  # still pending, scheduled on a loop that is gone

        async def next_request() -> None:
            audit._write(_spend("/v1/second"), 201, None)
            await asyncio.sleep(0)

        asyncio.run(next_request())
    assert [e["path_template"] for e in logs] == ["/v1/first", "/v1/second"]


def test_a_line_that_fails_to_log_leaves_the_rest_for_the_next_flush() -> None:
    """One failing log call does not drop the lines queued behind it."""
    lines = audit.Lines()
    seen: list[str] = []

    def fails(_event: str, **_fields: object) -> None:
        raise OSError("stderr is gone")

    def keeps(event: str, **_fields: object) -> None:
        seen.append(event)

    lines._pending.extend([(fails, "first", {}), (keeps, "second", {})])
    with pytest.raises(OSError):
        lines.flush()
    lines.flush()
    assert seen == ["second"]
