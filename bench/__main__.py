"""``python -m bench`` (``make bench``): direct vs minimal forwarder vs sidecar, ratios printed.

Default: 5 s per cell after 1 s of warm-up, c=1 and c=32, five schemes, three parties (about
3 minutes on 2 cores); with ``jws`` among them, JWS signing per algorithm is also measured
in-process (``bench/jwssign.py``) and printed after the table. ``--quick``: 1 s cells, a short
priming instead of a warm-up (about 30 s), for a smoke run. The JSON goes to
``bench/results/latest.json`` (git-ignored).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from bench import cpuprofile, image, jwssign, pyspy, report
from bench.run import Settings, run
from bench.scenarios import SCENARIOS

RESULTS = Path(__file__).with_name("results")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--quick", action="store_true", help="~30 s smoke run (1 s cells)")
    p.add_argument("--json-only", action="store_true", help="print only the JSON")
    p.add_argument("--seconds", type=float, help="seconds per cell (default 5, quick 1)")
    p.add_argument("--warmup", type=float, help="warm-up seconds per cell (default 1)")
    p.add_argument("-c", "--concurrency", type=int, nargs="+", default=[1, 32])
    p.add_argument("--scheme", nargs="+", choices=[s.name for s in SCENARIOS])
    p.add_argument("--python-load", action="store_true", help="bundled generator, not wrk")
    p.add_argument("--forwarder-uvloop", action="store_true", help="run the baseline on uvloop")
    p.add_argument("--profile", action="store_true", help="py-spy the sidecar during the load")
    p.add_argument(
        "--cprofile", action="store_true", help="run the sidecar under cProfile (CPU clock)"
    )
    p.add_argument(
        "--dev-venv",
        action="store_true",
        help="run the sidecar from .venv (with the test tools) instead of the image-like venv",
    )
    p.add_argument(
        "--against",
        metavar="REV",
        help="also run the sidecar of git revision REV, side by side (before/after in one run)",
    )
    p.add_argument("--out", type=Path, default=RESULTS / "latest.json")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.python_load:
        os.environ["BENCH_LOAD"] = "python"
    seconds = args.seconds or (1.0 if args.quick else 5.0)
    warmup = args.warmup if args.warmup is not None else (0.2 if args.quick else 1.0)
    chosen = [s for s in SCENARIOS if not args.scheme or s.name in args.scheme]

    def say(line: str) -> None:
        if not args.json_only:
            print(line, file=sys.stderr, flush=True)

    settings = Settings(
        seconds=seconds,
        warmup=warmup,
        concurrency=args.concurrency,
        scenarios=chosen,
        forwarder_uvloop=args.forwarder_uvloop,
        logs=RESULTS / "logs",
        say=say,
        profile=RESULTS / "sidecar-profile.txt" if args.profile else None,
        cprofile=RESULTS / "sidecar.cprof" if args.cprofile else None,
    )
    settings.against = args.against
    if not args.dev_venv and not args.cprofile:
        settings.sidecar_bin = image.bin_dir(say)
    result = run(settings)
    result["ratios"] = report.ratios(result)
    result["intercept_ratios"] = report.intercept_ratios(result)
    result["targets"] = report.targets(result)
    if any(sc.name == "jws" for sc in chosen):  # RS256 dominates the jws row: shown apart
        say("measuring JWS signing per algorithm (in-process) ...")
        result["jws_sign"] = jwssign.measure(0.3 if args.quick else 1.0)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    if args.json_only:
        print(json.dumps(result, indent=2))
        return 0
    print(report.table(result))
    if "jws_sign" in result:
        print("\n" + jwssign.table(result["jws_sign"]))
    print(f"\nJSON: {args.out}")
    if settings.cprofile is not None and settings.cprofile.exists():
        print(f"\ncProfile: {settings.cprofile}\n" + cpuprofile.summarise(settings.cprofile))
    if settings.profile is not None and settings.profile.exists():
        print(f"\npy-spy: {settings.profile}\n" + pyspy.summarise(settings.profile))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
