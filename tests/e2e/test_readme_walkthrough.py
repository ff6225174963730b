"""The README's admin walk-through, run as printed against `sidecar dev` (what `make run` runs).

The commands between ``<!-- walkthrough -->`` and ``<!-- /walkthrough -->`` are taken from
README.md and run by one bash, in order (variables and functions carry over, as in a user's
terminal). Only the admin token placeholder and the loopback ports are replaced: `sidecar dev`
runs on a copy of ``config/dev.yaml`` with free ports, so the test never fights another run for
8080. Each ``# -> STATUS {json}`` line under a command is the documented answer: the status must
be equal and the JSON a subset (``...`` stands for keys left out; lists match item by item).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from sidecar.sandbox.demo import PIX_KEY
from sidecar.sandbox.openbao import free_port

ROOT = Path(__file__).resolve().parents[2]
TOKEN_PLACEHOLDER = "'<the admin token make run printed>'"
EXPECT = re.compile(r"^# -> (\d{3})(?:\s+(.*))?$")
MARK = "@@walkthrough-step"


@dataclass
class Step:
    """One command (continuation lines joined) and the answer the README documents for it."""

    command: str
    status: int | None = None
    body: list[str] = field(default_factory=list)

    def expected_json(self) -> Any:
        text = " ".join(self.body).strip()
        if not text:
            return None
        text = re.sub(r",\s*\.\.\.", "", text)
        return json.loads(re.sub(r"\{\s*\.\.\.\s*\}", "{}", text))


def walkthrough_steps(readme: str) -> list[Step]:
    """The shell blocks between the markers, split into commands with their expectations."""
    match = re.search(r"<!-- walkthrough -->(.*?)<!-- /walkthrough -->", readme, re.S)
    assert match, "README.md lost its <!-- walkthrough --> markers"
    return parse_steps("\n".join(re.findall(r"```sh\n(.*?)```", match.group(1), re.S)))


def parse_steps(text: str) -> list[Step]:
    """Shell text split into commands (continuation lines joined), each with the ``# ->``
    answer documented under it."""
    steps: list[Step] = []
    lines = iter(text.splitlines())
    expecting = False
    for line in lines:
        if m := EXPECT.match(line):
            steps[-1].status, steps[-1].body = int(m.group(1)), [m.group(2) or ""]
            expecting = True
        elif expecting and line.startswith("#   "):
            steps[-1].body.append(line[1:])
        elif line.strip() and not line.startswith("#"):
            command = line
            while command.endswith("\\"):
                command += "\n" + next(lines)
            steps.append(Step(command))
            expecting = False
        else:
            expecting = False
    return steps


def subset(expected: Any, actual: Any, where: str = "$") -> None:
    """``expected`` is found in ``actual``: dict keys a subset, lists item by item, scalars equal."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict), f"{where}: expected an object, got {actual!r}"
        for key, value in expected.items():
            assert key in actual, f"{where}: missing {key!r} in {actual!r}"
            subset(value, actual[key], f"{where}.{key}")
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), f"{where}: {actual!r}"
        for i, (e, a) in enumerate(zip(expected, actual, strict=True)):
            subset(e, a, f"{where}[{i}]")
    else:
        assert expected == actual, f"{where}: expected {expected!r}, got {actual!r}"


@dataclass
class Dev:
    token: str
    ports: dict[str, str]  # the README's address -> this run's


def shifted_config(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """config/dev.yaml with every loopback port replaced by a free one; the README's addresses
    mapped to the new ones."""
    data = yaml.safe_load((ROOT / "config/dev.yaml").read_text())
    moved: dict[str, str] = {}

    def move(address: str) -> str:
        host = address.rpartition(":")[0]
        new = f"{host}:{free_port()}"
        moved[address] = new
        return new

    data["listen"] = {k: move(v) for k, v in data["listen"].items()}
    for upstream in data["upstreams"].values():
        scheme, _, address = upstream["url"].partition("://")
        upstream["url"] = f"{scheme}://{move(address)}"
    path = tmp_path / "dev.yaml"
    path.write_text(yaml.safe_dump(data))
    return path, moved


@pytest.fixture
def dev(tmp_path: Path) -> Iterator[Dev]:
    """`sidecar dev` as `make run` starts it, on free ports; yields once it prints its token."""
    config_path, moved = shifted_config(tmp_path)
    out_path = tmp_path / "dev.out"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}
    env["VAULT_ADDR"] = f"http://127.0.0.1:{free_port()}"
    with out_path.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sidecar.cli", "dev", "--config", str(config_path)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=ROOT,
        )
    try:
        yield Dev(wait_for_token(proc, out_path), moved)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_for_token(proc: subprocess.Popen[bytes], out_path: Path) -> str:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        text = out_path.read_text(errors="replace")
        if "sidecar running" in text:
            return re.search(r"admin token \(this run only\): (\S+)", text).group(1)  # type: ignore[union-attr]
        if proc.poll() is not None:
            raise RuntimeError(f"sidecar dev exited {proc.returncode}: {text[-3000:]}")
        time.sleep(0.1)
    raise TimeoutError(out_path.read_text(errors="replace")[-3000:])


def script(steps: list[Step], dev: Dev) -> str:
    """One bash script: each step announced by a marker, then run, then its exit code."""
    parts = []
    for i, step in enumerate(steps):
        command = step.command.replace(TOKEN_PLACEHOLDER, f"'{dev.token}'")
        for readme_address, address in dev.ports.items():
            command = command.replace(readme_address, address)
        parts.append(f"echo '{MARK} {i}'\n{command}\necho \"{MARK} rc $?\"")
    return "\n".join(parts) + "\n"


def outputs(stdout: str, count: int) -> list[tuple[str, int]]:
    """Each step's output and exit code, split on the markers."""
    chunks = re.split(rf"^{MARK} (\d+)\n", stdout, flags=re.M)[1:]
    found = []
    for index, chunk in zip(chunks[0::2], chunks[1::2], strict=True):
        text, rc = re.match(rf"(.*){MARK} rc (\d+)\n$", chunk, re.S).groups()  # type: ignore[union-attr]
        found.append((int(index), text, int(rc)))
    assert [i for i, _, _ in found] == list(range(count)), stdout[-2000:]
    return [(text, rc) for _, text, rc in found]


def check(step: Step, text: str, rc: int) -> None:
    assert rc == 0, f"{step.command}\nexit {rc}: {text}"
    if step.status is None:
        return
    *body, status = text.rstrip("\n").split("\n")
    assert int(status) == step.status, f"{step.command}\n-> {status} {body}"
    expected = step.expected_json()
    if expected is not None:
        subset(expected, json.loads("\n".join(body)), step.command[:60])


def test_walkthrough_parses_into_documented_steps() -> None:
    """The README holds the walk-through, and most of its commands carry a documented answer."""
    steps = walkthrough_steps((ROOT / "README.md").read_text())
    assert len(steps) >= 30
    assert sum(step.status is not None for step in steps) >= 20
    assert any(TOKEN_PLACEHOLDER in step.command for step in steps)


def test_readme_walkthrough_runs_as_printed(dev: Dev) -> None:
    """Every walk-through command, run by bash against `sidecar dev`, answers as documented,
    and no answer carries the PIX partner's key."""
    steps = walkthrough_steps((ROOT / "README.md").read_text())
    started = time.monotonic()
    run = subprocess.run(
        ["bash", "-c", script(steps, dev)], capture_output=True, text=True, timeout=120
    )
    print(f"{len(steps)} steps in {time.monotonic() - started:.2f} s")
    assert run.returncode == 0, run.stderr[-2000:]
    results = outputs(run.stdout, len(steps))
    for step, (text, rc) in zip(steps, results, strict=True):
        check(step, text, rc)
    assert PIX_KEY not in run.stdout + run.stderr
