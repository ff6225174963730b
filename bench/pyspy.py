"""Sample the sidecar with py-spy while the load runs, then summarise the stacks.

``python -m bench --profile`` wraps the sidecar cells in ``py-spy record --format raw``
(collapsed stacks, idle frames excluded) and prints where the CPU went: by function (self and
inclusive) and by package, so the hot path's owners can see what to change.
``python -m bench.pyspy <file>`` summarises a saved profile again.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

from bench.procs import Proc


def py_spy() -> str | None:
    local = Path(sys.executable).with_name("py-spy")
    return str(local) if local.exists() else shutil.which("py-spy")


def start(proc: Proc, out: Path, rate: int = 200) -> subprocess.Popen[bytes] | None:
    """Attach to the sidecar; ``--nonblocking`` so sampling does not pause it."""
    exe = py_spy()
    if exe is None:
        return None
    cmd = [exe, "record", "--pid", str(proc.pid), "--rate", str(rate), "--nonblocking"]
    cmd += ["--format", "raw", "--output", str(out)]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop(spy: subprocess.Popen[bytes] | None) -> None:
    if spy is None or spy.poll() is not None:
        return
    spy.send_signal(signal.SIGINT)
    try:
        spy.wait(30)
    except subprocess.TimeoutExpired:
        spy.kill()


def _frame(raw: str) -> tuple[str, str]:
    """``func (pkg/module.py:123)`` -> (``module.py:func``, ``pkg`` or ``sidecar/<module>``)."""
    func, _, where = raw.partition(" (")
    parts = Path(where.rsplit(":", 1)[0]).parts
    if not parts:
        return func, "?"
    package = parts[0] if parts[0] != "sidecar" else "/".join(parts).removesuffix(".py")
    return f"{parts[-1]}:{func}", package


def summarise(path: Path, top: int = 25) -> str:
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [_frame(f) for f in stack.split(";") if " (" in f]
        if not frames:
            continue
        own[frames[-1][0]] += n
        packages[frames[-1][1]] += n
        for name in {f[0] for f in frames}:
            inclusive[name] += n
    if not total:
        return "no samples"
    lines = [f"{total} samples (non-idle)", "", "self time by function:"]
    lines += [f"  {n / total:6.1%}  {name}" for name, n in own.most_common(top)]
    lines += ["", "inclusive time by function:"]
    lines += [f"  {n / total:6.1%}  {name}" for name, n in inclusive.most_common(top)]
    lines += ["", "self time by package/module:"]
    lines += [f"  {n / total:6.1%}  {name}" for name, n in packages.most_common(top)]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("file", type=Path)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    print(summarise(args.file, args.top))


if __name__ == "__main__":
    main()
