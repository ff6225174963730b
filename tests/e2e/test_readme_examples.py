"""Every shell example in README.md, run as printed against `sidecar dev` (what `make run` runs).

Each fenced shell block is one of three kinds: the admin walk-through (between its markers, run
by ``test_readme_walkthrough.py``), a block marked ``<!-- not run: reason -->`` on the line before
it (production commands that need a cluster or a real Vault), or an example, run here. The
examples run in README order in one bash (``set -euo pipefail``), as a user pastes them into one
terminal after the quick start; only the admin token and the loopback ports are replaced, as in
the walk-through test, whose parser, checks and `sidecar dev` fixture this module reuses.
"""

from __future__ import annotations

import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from sidecar.sandbox import demo
from tests.e2e import test_readme_walkthrough as walk

ROOT = walk.ROOT
SHELL = {"sh", "bash", "console", "shell"}
FENCE = re.compile(r"^```(\S*)\n(.*?)^```$", re.M | re.S)
NOT_RUN = re.compile(r"<!-- not run: \S.* -->\s*$")
ADDRESS = re.compile(r"127\.0\.0\.1:\d+")

dev = walk.dev  # the same `sidecar dev` on free ports as the walk-through's


@dataclass
class Block:
    lang: str
    text: str
    kind: str  # "walkthrough", "not-run", "example" or "other" (not shell)


def blocks(readme: str) -> list[Block]:
    """Every fenced block of the README with what the tests do with it."""
    inside = re.search(r"<!-- walkthrough -->.*?<!-- /walkthrough -->", readme, re.S)
    assert inside, "README.md lost its <!-- walkthrough --> markers"
    found = []
    for m in FENCE.finditer(readme):
        before = readme[: m.start()].rstrip("\n").rpartition("\n")[2]
        if m.group(1) not in SHELL:
            kind = "other"
        elif inside.start() < m.start() < inside.end():
            kind = "walkthrough"
        else:
            kind = "not-run" if NOT_RUN.match(before) else "example"
        found.append(Block(m.group(1), m.group(2), kind))
    return found


def example_steps(readme: str) -> list[walk.Step]:
    text = "\n".join(b.text for b in blocks(readme) if b.kind == "example")
    return walk.parse_steps(text)


def unchecked(step: walk.Step) -> bool:
    """A command that would pass whatever it answered: a call whose answer is printed but not
    documented (``# ->``) and not otherwise checked (a file, a pipe, a capture)."""
    first = step.command.split()[0]
    if first in ("pc", "ac"):
        return step.status is None and not step.command.rstrip().endswith(">/dev/null")
    return first == "curl" and " -o " not in step.command and "|" not in step.command


def demo_secrets() -> list[str]:
    """Every secret value `sidecar dev` stores: none may appear in what the examples print."""
    secret_names = {"secret_key", "client_secret", "api_key", "private_key", "client_private_key"}
    values = [demo.PIX_KEY]
    for body in demo.demo_credentials().values():
        values += [v for k, v in body["fields"].items() if k in secret_names]
    return values


def test_every_shell_block_is_run_or_marked() -> None:
    """Each README shell block is the walk-through, an example run here, or marked not-run;
    an untagged block holds no command, every example call has its answer checked, and the
    examples cover every dev.yaml upstream in
    path mode and every host it lists in forward-proxy and CONNECT modes."""
    readme = (ROOT / "README.md").read_text()
    found = blocks(readme)
    assert {b.kind for b in found} >= {"walkthrough", "not-run", "example"}
    for b in found:
        assert b.lang or not re.search(r"^\s*(curl|make|sidecar|ac|pc)\s", b.text, re.M), b.text
    steps = example_steps(readme)
    assert sum(s.status is not None for s in steps) >= 30
    assert [s.command for s in steps if unchecked(s)] == []
    commands = "\n".join(s.command for s in steps)
    upstreams = yaml.safe_load((ROOT / "config/dev.yaml").read_text())["upstreams"]
    for name, upstream in upstreams.items():
        assert f"$P/{name}/" in commands, name
        for host in upstream.get("hosts", []):
            assert f"http://{host}/" in commands and f"https://{host}/" in commands, host


def test_examples_use_only_make_run_addresses(tmp_path: Path) -> None:
    """Every loopback address an example names is one `make run` serves, so the test's port
    substitution reaches it and a user's paste reaches the right listener or peer."""
    _, moved = walk.shifted_config(tmp_path)
    text = "\n".join(s.command for s in example_steps((ROOT / "README.md").read_text()))
    assert set(ADDRESS.findall(text)) <= set(moved)


def test_readme_examples_run_as_printed(dev: walk.Dev, tmp_path: Path) -> None:
    """Every example command, run by bash against `sidecar dev`, answers as documented, and no
    answer carries a secret the sidecar holds."""
    steps = example_steps((ROOT / "README.md").read_text())
    started = time.monotonic()
    run = subprocess.run(
        ["bash", "-c", "set -euo pipefail\n" + walk.script(steps, dev)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,  # ca.pem lands here, not in the repository
    )
    print(f"{len(steps)} steps in {time.monotonic() - started:.2f} s")
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    results = walk.outputs(run.stdout, len(steps))
    for step, (text, rc) in zip(steps, results, strict=True):
        walk.check(step, text, rc)
    for secret in demo_secrets():
        assert secret not in run.stdout + run.stderr
