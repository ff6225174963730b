"""Run the generated cases through the in-memory engine and tally the disagreements."""

from __future__ import annotations

import time

import pytest
from structlog.testing import capture_logs

from tests.fuzz import check, gen
from tests.fuzz.harness import Engine, Tally


async def run_cases(seed: int, count: int) -> Tally:
    """Every case: requests through the listener, answers through the client and listener."""
    tally = Tally()
    engine = Engine()
    started = time.perf_counter()
    with pytest.MonkeyPatch.context() as mp, engine.patched(mp), capture_logs() as logs:
        for case in gen.cases(seed, count):
            if case.kind == "request":
                run = await engine.drive(case.reads() or [case.data], [])
                tally.add(check.check_request(case, run))
                tally.requests += 1
            else:
                run = await engine.drive([check.app_request(case)], case.reads() or [case.data])
                tally.add(check.check_response(case, run))
                tally.responses += 1
            tally.cases += 1
            tally.mutated += bool(case.mutation)
            logs.clear()
    tally.seconds = time.perf_counter() - started
    return tally
