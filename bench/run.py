"""One benchmark run: start the parties, store the credentials, drive every cell, collect.

Order of events: the upstream and OpenBao; the sidecar once with an empty store (to save the
credentials through the admin API, verified against the upstream like in production), then
again, timing start to ``/readyz`` 200 with the credentials to load; the forwarder; then the
cells, scheme by scheme and concurrency by concurrency, direct / forwarder / sidecar side by
side so a noisy neighbour hurts all three alike. Intercepted HTTPS (``CONNECT`` + TLS,
keep-alive in the tunnel) is measured on a second sidecar, the same code with interception on
(so the first one's memory and start-up figures stay those of the default config), beside
path mode on that same process and by the same bundled generator (wrk cannot CONNECT).
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bench import against as against_mod
from bench import image, load, procs, pyspy
from bench.scenarios import Scenario
from sidecar.sandbox.openbao import ROOT_TOKEN, OpenBao, free_port

BIN = Path(sys.executable).parent
REFRESH_INTERVAL = 30.0  # the sidecar's default cache.refresh_interval, kept as shipped


@dataclass
class Settings:
    seconds: float
    warmup: float
    concurrency: list[int]
    scenarios: list[Scenario]
    forwarder_uvloop: bool
    logs: Path
    profile: Path | None = None
    cprofile: Path | None = None
    say: Any = print
    sidecar_bin: Path = BIN  # bench.image.bin_dir() unless --dev-venv
    against: str | None = None  # a git revision whose sidecar/ runs beside, as "sidecar@REV"


ADMIN_TOKEN = "bench-admin-token"  # a throwaway bench value for the one-process sidecar


@dataclass
class Ports:
    upstream: int = field(default_factory=free_port)
    forwarder: int = field(default_factory=free_port)
    proxy: int = field(default_factory=free_port)
    admin: int = field(default_factory=free_port)
    local: int = field(default_factory=free_port)
    against_proxy: int = field(default_factory=free_port)
    against_admin: int = field(default_factory=free_port)
    against_local: int = field(default_factory=free_port)
    intercept_proxy: int = field(default_factory=free_port)
    intercept_admin: int = field(default_factory=free_port)

    def url(self, port: int) -> str:
        return f"http://127.0.0.1:{port}"


def sidecar_config(s: Settings, ports: Ports, vault_addr: str) -> dict[str, Any]:
    upstream = ports.url(ports.upstream)
    return {
        "vault": {
            "address": vault_addr,
            "auth": {"method": "token", "token": ROOT_TOKEN},
            "prefix": f"bench/{uuid.uuid4().hex[:8]}",
        },
        "listen": {
            "proxy": f"127.0.0.1:{ports.proxy}",
            "admin": f"127.0.0.1:{ports.admin}",
            "local": f"127.0.0.1:{ports.local}",
        },
        "admin": {"token": ADMIN_TOKEN},
        "logging": {"level": "info", "format": "json"},
        "cache": {"refresh_interval": REFRESH_INTERVAL},
        "upstreams": {sc.name: sc.upstream_config(upstream) for sc in s.scenarios},
    }


def start_sidecar(
    s: Settings,
    config_path: Path,
    ports: Ports,
    started: list[procs.Proc],
    cprofile: Path | None = None,
) -> tuple[procs.Proc, float]:
    """Spawn ``sidecar run --role all`` (proxy and admin in one process, so the bench can store
    its credentials); seconds from spawn to ``/readyz`` 200 (polled every 10 ms)."""
    logs = s.logs
    cmd = [str(s.sidecar_bin / "sidecar"), "run", "--role", "all", "--config", str(config_path)]
    if cprofile is not None:  # cProfile needs the bench package: the dev venv
        cmd = [sys.executable, "-m", "bench.cpuprofile", str(cprofile), *cmd[1:]]
    proc = procs.spawn("sidecar", cmd, logs / "sidecar.log")
    started.append(proc)
    return proc, procs.wait_ok(ports.url(ports.admin) + "/readyz", proc)


def start_against(
    s: Settings, config: dict[str, Any], ports: Ports, started: list[procs.Proc]
) -> tuple[procs.Proc, against_mod.Revision]:
    """The sidecar of revision ``s.against`` on its own ports, sharing the credentials.

    Its ``sidecar/`` is exported with ``git archive`` and run from that directory (the current
    directory comes first on ``sys.path``, before the editable install of this checkout), with
    the same interpreter and dependencies as the sidecar under test. Started as that revision
    understands (``against.probe``): ``run --role all`` where roles exist, like the sidecar
    under test, plain ``run`` before; readiness from its admin listener either way.
    """
    rev = _export(s)
    python = s.sidecar_bin / "python"
    names = [sc.name for sc in s.scenarios]
    old = against_mod.probe(python, rev, s.logs.parent / f"against-{rev}", names)
    for name, why in old.missing.items():
        s.say(f"sidecar@{rev}: skipping the {name} cells: {why}")
    own = [ports.against_proxy, ports.against_admin, ports.against_local]
    listen = old.listen(*(f"127.0.0.1:{port}" for port in own))
    path = s.logs / "sidecar-against.yaml"
    path.write_text(yaml.safe_dump(against_mod.config(old, config, listen)))
    cmd = [str(python), "-m", "sidecar.cli", *old.run_args(), "--config", str(path)]
    s.say(f"starting sidecar@{rev} ({' '.join(old.run_args())}) ...")
    proc = procs.spawn(f"sidecar@{rev}", cmd, s.logs / "sidecar-against.log", cwd=old.tree)
    started.append(proc)
    procs.wait_ok(ports.url(ports.against_admin) + "/readyz", proc)
    s.against = rev
    return proc, old


def _export(s: Settings) -> str:
    """``git archive`` of the revision's ``sidecar/`` under the logs' parent; its short hash."""
    assert s.against is not None
    rev = _git("rev-parse", "--short", s.against).decode().strip()
    tree = s.logs.parent / f"against-{rev}"
    if not (tree / "sidecar").exists():
        tree.mkdir(parents=True, exist_ok=True)
        archive = _git("archive", rev, "sidecar")
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    return rev


def start_intercepting(
    s: Settings, config: dict[str, Any], ports: Ports, started: list[procs.Proc]
) -> procs.Proc:
    """This checkout's sidecar with interception on, on its own ports, sharing the credentials.

    It runs the proxy role (what a pod runs): readiness is read from its local listener.
    """
    data = {
        **config,
        "listen": {
            "proxy": f"127.0.0.1:{ports.intercept_proxy}",
            "local": f"127.0.0.1:{ports.intercept_admin}",
        },
        "intercept": {"enabled": True, "ca_cert_path": str(ca_file(s))},
    }
    path = s.logs / "sidecar-intercept.yaml"
    path.write_text(yaml.safe_dump(data))
    cmd = [str(s.sidecar_bin / "sidecar"), "run", "--role", "proxy", "--config", str(path)]
    proc = procs.spawn("sidecar-intercept", cmd, s.logs / "sidecar-intercept.log")
    started.append(proc)
    procs.wait_ok(ports.url(ports.intercept_admin) + "/readyz", proc)
    return proc


def store_credentials(s: Settings, ports: Ports) -> None:
    for sc in s.scenarios:
        name = sc.upstream_config("")["credential"]
        body = {"upstream": sc.name, "environment": "sandbox", "fields": sc.fields}
        url = f"{ports.url(ports.admin)}/v1/credentials/{name}"
        procs.http_json("PUT", url, body, {"Authorization": f"Bearer {ADMIN_TOKEN}"})


def ca_file(s: Settings) -> Path:
    """Where the sidecar writes its interception CA, for the load generator to trust."""
    return s.logs / "sidecar-ca.pem"


def target(sc: Scenario, base: str, prefix: str, connect: str = "", ca: str = "") -> load.Target:
    return load.Target(base + prefix + sc.path, sc.method, sc.headers, sc.body, connect, ca)


# The interception sidecar's two parties, both driven by the bundled generator.
PATH_PY = "icpt:path"  # path mode, the reference
INTERCEPTED = "icpt:connect"  # CONNECT + TLS, keep-alive in the tunnel
PAIRED_ROUNDS = 2  # the pair's cells alternate in this many rounds (same total time)


def run(s: Settings) -> dict[str, Any]:
    s.logs.mkdir(parents=True, exist_ok=True)
    for stale in s.logs.glob("*.log"):
        stale.unlink()
    ports = Ports()
    started: list[procs.Proc] = []
    bao = OpenBao()
    loadavg_before = os.getloadavg()[0]
    try:
        upstream = procs.spawn(
            "upstream",
            [sys.executable, "-m", "bench.upstream", "--port", str(ports.upstream)],
            s.logs / "upstream.log",
        )
        started.append(upstream)
        procs.wait_ok(ports.url(ports.upstream) + "/", upstream)
        s.say("starting OpenBao ...")
        bao.start()
        config_path = s.logs / "sidecar.yaml"
        config = sidecar_config(s, ports, bao.addr)
        config_path.write_text(yaml.safe_dump(config))
        sidecar, ready_empty = start_sidecar(s, config_path, ports, started)
        store_credentials(s, ports)
        sidecar.stop()
        sidecar, ready = start_sidecar(s, config_path, ports, started, s.cprofile)
        forwarder = _start_forwarder(s, ports, started)
        against, old = start_against(s, config, ports, started) if s.against else (None, None)
        intercepting = start_intercepting(s, config, ports, started)
        time.sleep(0.5)
        side: dict[str, Any] = {
            "pid": sidecar.pid,
            "ready_s": ready,
            "ready_s_empty": ready_empty,
            "credentials": len(s.scenarios),
            "rss_idle_kib": sidecar.status_kib("VmRSS"),
            "refresh_interval": REFRESH_INTERVAL,
            "venv": s.sidecar_bin.parent.name,
        }
        metrics_url = ports.url(ports.local) + "/metrics"
        vault_before = procs.vault_requests(metrics_url)
        load_started = time.monotonic()
        spy = pyspy.start(sidecar, s.profile) if s.profile else None
        try:
            with procs.RssSampler(sidecar) as sampler:
                cells = _cells(s, ports, forwarder, sidecar, against, intercepting, old)
        finally:
            pyspy.stop(spy)
        load_seconds = time.monotonic() - load_started
        side["vault_requests_during_load"] = procs.vault_requests(metrics_url) - vault_before
        side["load_seconds"] = load_seconds
        side["vault_sync_budget"] = (math.ceil(load_seconds / REFRESH_INTERVAL) + 1) * (
            1 + len(s.scenarios)
        )
        side["proxied_requests"] = sum(c["requests"] for c in cells if c["target"] == "sidecar")
        side["rss_load_peak_kib"] = sampler.peak_kib
        side["rss_after_kib"] = sidecar.status_kib("VmRSS")
        side["hwm_kib"] = sidecar.status_kib("VmHWM")
        if against is not None:
            assert old is not None
            side["against"] = {
                "revision": s.against,
                "started_as": " ".join(old.run_args()),
                "skipped_schemes": [sc.name for sc in s.scenarios if sc.name not in old.schemes],
                "rss_after_kib": against.status_kib("VmRSS"),
                "hwm_kib": against.status_kib("VmHWM"),
            }
    finally:
        for proc in reversed(started):
            proc.stop()
        bao.stop()
    return {
        "tool": _tool_name(),
        "settings": {
            "seconds": s.seconds,
            "warmup": s.warmup,
            "concurrency": s.concurrency,
            "schemes": [sc.name for sc in s.scenarios],
            "forwarder_loop": "uvloop" if s.forwarder_uvloop else "asyncio (aiohttp default)",
            "against": s.against,
        },
        "code": _code_version(),
        "machine": {
            "cpus": os.cpu_count(),
            "loadavg_before": loadavg_before,
            "loadavg_after": os.getloadavg()[0],
            "python": platform.python_version(),
        },
        "cells": cells,
        "sidecar": side,
    }


def _start_forwarder(s: Settings, ports: Ports, started: list[procs.Proc]) -> procs.Proc:
    specs = {sc.name: sc.forwarder_spec(ports.url(ports.upstream)) for sc in s.scenarios}
    cmd = [sys.executable, "-m", "bench.forwarder", "--port", str(ports.forwarder)]
    if s.forwarder_uvloop:
        cmd.append("--uvloop")
    env = {"BENCH_FORWARDER_SPECS": json.dumps(specs)}
    proc = procs.spawn("forwarder", cmd, s.logs / "forwarder.log", env)
    started.append(proc)
    procs.wait_ok(f"{ports.url(ports.forwarder)}/{s.scenarios[0].name}/ready", proc)
    return proc


def _cells(
    s: Settings,
    ports: Ports,
    forwarder: procs.Proc,
    sidecar: procs.Proc,
    against: procs.Proc | None,
    intercepting: procs.Proc,
    old: against_mod.Revision | None = None,
) -> list[dict[str, Any]]:
    cells: list[dict[str, Any]] = []
    parties: list[tuple[str, str, str | None, procs.Proc | None]] = [
        ("direct", ports.url(ports.upstream), "", None),
        ("forwarder", ports.url(ports.forwarder), None, forwarder),
        ("sidecar", ports.url(ports.proxy), None, sidecar),
    ]
    if against is not None:
        parties.append((f"sidecar@{s.against}", ports.url(ports.against_proxy), None, against))
    icpt = ports.url(ports.intercept_proxy)
    for sc in s.scenarios:
        for c in s.concurrency:
            for name, base, prefix, proc in parties:
                if proc is against and old is not None and sc.name not in old.schemes:
                    continue  # said at start: that revision has no such scheme
                tgt = target(sc, base, f"/{sc.name}" if prefix is None else prefix)
                load.warm(tgt, c, s.warmup)
                cpu = proc.cpu_seconds() if proc else 0.0
                result = load.measure(tgt, c, s.seconds)
                spent = (proc.cpu_seconds() - cpu) if proc else None
                cells.append(_cell(s, sc, c, name, result, spent))
            pair = {
                PATH_PY: target(sc, icpt, f"/{sc.name}"),
                INTERCEPTED: target(sc, icpt, "", sc.host, str(ca_file(s))),
            }
            cells += _paired(s, sc, c, intercepting, pair)
    return cells


def _paired(
    s: Settings, sc: Scenario, c: int, proc: procs.Proc, pair: dict[str, load.Target]
) -> list[dict[str, Any]]:
    """Two targets on one process, measured in alternating rounds and merged per target.

    Why: on a shared machine a neighbour's load comes and goes within seconds; alternating
    halves of the cell time expose both targets to it alike, so their ratio is steadier.
    """
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in pair}
    spent = dict.fromkeys(pair, 0.0)
    for tgt in pair.values():
        load.warm(tgt, c, s.warmup, bundled=True)
    for _ in range(PAIRED_ROUNDS):
        for name, tgt in pair.items():
            cpu = proc.cpu_seconds()
            results[name].append(load.measure(tgt, c, s.seconds / PAIRED_ROUNDS, bundled=True))
            spent[name] += proc.cpu_seconds() - cpu
    return [_cell(s, sc, c, n, load.merge(results[n]), spent[n]) for n in pair]


def _cell(
    s: Settings, sc: Scenario, c: int, name: str, result: dict[str, Any], spent: float | None
) -> dict[str, Any]:
    """A cell's row, with the proxy's CPU per request; printed as progress."""
    per_req = spent / result["requests"] * 1e6 if spent and result["requests"] else None
    s.say(
        f"{sc.name:<26} c={c:<3} {name:<17} {result['rps']:>8.0f} req/s  "
        f"p50 {result['p50_us']:>7.0f} µs  p99 {result['p99_us']:>7.0f} µs"
    )
    return {
        "scheme": sc.name,
        "concurrency": c,
        "target": name,
        **result,
        "proxy_cpu_us_per_req": per_req,
    }


def _git(*args: str, check: bool = True) -> bytes:
    """A git command in this checkout; its standard output."""
    return subprocess.run(["git", *args], cwd=image.ROOT, check=check, capture_output=True).stdout


def _code_version() -> dict[str, Any]:
    """The commit measured, and whether sidecar/ had uncommitted edits (a shared tree)."""
    return {
        "commit": _git("rev-parse", "--short", "HEAD", check=False).decode().strip(),
        "sidecar_dirty": bool(_git("status", "--porcelain", "--", "sidecar", check=False)),
    }


def _tool_name() -> str:
    if load.tool() != "wrk":
        return "python (bench.load, bundled asyncio generator, 1 process)"
    return "wrk (1 thread, Lua script for method/body/headers)"
