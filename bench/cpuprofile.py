"""Run ``sidecar`` under cProfile with a CPU-time clock: ``python -m bench.cpuprofile OUT ARGS``.

On a small shared box a wall-clock sampler (py-spy) charges preemption to whatever frame was
running, typically the socket write that woke the load generator. ``time.thread_time`` counts
only the event-loop thread's CPU, so the split between aiohttp, the pipeline, the schemes and
logging is what the sidecar itself spends. cProfile slows every Python call down, so read the
shares, not the absolute times. The profile is written when the sidecar exits (SIGTERM).
"""

from __future__ import annotations

import cProfile
import pstats
import sys
import time
from pathlib import Path


def main() -> int:
    out, args = Path(sys.argv[1]), sys.argv[2:]
    from sidecar.cli import main as sidecar_main

    profiler = cProfile.Profile(time.thread_time)
    profiler.enable()
    try:
        return sidecar_main(args)
    finally:
        profiler.disable()
        profiler.dump_stats(out)


# The request path: the per-request task, plus the two parsers' callbacks outside it.
REQUEST_PATH = (
    ("listener.py", "_serve"),
    ("listener.py", "data_received"),
    ("client.py", "data_received"),
)


def summarise(path: Path, top: int = 30) -> str:
    """Sidecar functions by inclusive CPU, as a share of the request path's total."""
    stats = pstats.Stats(str(path))
    rows = stats.stats  # type: ignore[attr-defined]
    everything: float = stats.total_tt  # type: ignore[attr-defined]
    total = sum(v[3] for k, v in rows.items() if (Path(k[0]).name, k[2]) in REQUEST_PATH) or 1.0
    ours = sorted(
        (
            (v[3], f"{Path(k[0]).name}:{k[2]}", v[1])
            for k, v in rows.items()
            if "/sidecar/" in k[0] and k[2] != "<module>"
        ),
        reverse=True,
    )
    lines = [
        f"the request path (listener._serve and both parsers' callbacks) is "
        f"{total / everything:.0%} of the sidecar's profiled CPU (the rest: the event loop, "
        "start-up, Vault sync, admin calls)",
        "inclusive CPU as a share of the request path (cProfile, thread CPU clock; coroutine",
        "resumptions count as calls):",
    ]
    lines += [f"  {cum / total:6.1%}  {name}  ({calls} calls)" for cum, name, calls in ours[:top]]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
