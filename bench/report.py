"""Ratios, targets and the human-readable table, all from the run's plain result dict.

The targets are benchmark figures to report against, never assertions: a miss is printed as
``MISS`` and the run still succeeds.
"""

from __future__ import annotations

import math
from typing import Any

TARGETS = ("direct", "forwarder", "sidecar")
MIB = 1024.0


def cell(result: dict[str, Any], scheme: str, c: int, target: str) -> dict[str, Any]:
    for row in result["cells"]:
        if (row["scheme"], row["concurrency"], row["target"]) == (scheme, c, target):
            found: dict[str, Any] = row
            return found
    raise KeyError((scheme, c, target))


def _div(a: float, b: float) -> float:
    return a / b if b else math.nan


def ratios(result: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for scheme in result["settings"]["schemes"]:
        for c in result["settings"]["concurrency"]:
            a, b, s = (cell(result, scheme, c, t) for t in TARGETS)
            rows.append(
                {
                    "scheme": scheme,
                    "concurrency": c,
                    "rps_sidecar_over_direct": _div(s["rps"], a["rps"]),
                    "rps_sidecar_over_forwarder": _div(s["rps"], b["rps"]),
                    "p50_added_us_sidecar": s["p50_us"] - a["p50_us"],
                    "p50_added_us_forwarder": b["p50_us"] - a["p50_us"],
                    "cpu_us_per_req_sidecar_over_forwarder": _div(
                        s["proxy_cpu_us_per_req"], b["proxy_cpu_us_per_req"]
                    ),
                }
            )
    return rows


def intercept_ratios(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Intercepted HTTPS over path mode, both driven by the bundled generator."""
    rows = []
    for scheme in result["settings"]["schemes"]:
        for c in result["settings"]["concurrency"]:
            p, i = (cell(result, scheme, c, t) for t in ("icpt:path", "icpt:connect"))
            rows.append(
                {
                    "scheme": scheme,
                    "concurrency": c,
                    "rps_path": p["rps"],
                    "rps_intercepted": i["rps"],
                    "rps_intercepted_over_path": _div(i["rps"], p["rps"]),
                    "cpu_us_path": p["proxy_cpu_us_per_req"],
                    "cpu_us_intercepted": i["proxy_cpu_us_per_req"],
                    "load_cpu_path": p.get("load_cpu_share", math.nan),
                    "load_cpu_intercepted": i.get("load_cpu_share", math.nan),
                }
            )
    return rows


def targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    rows = result["ratios"]
    conc = result["settings"]["concurrency"]
    side = result["sidecar"]
    found: list[dict[str, Any]] = []
    if 32 in conc:
        worst = min(r["rps_sidecar_over_forwarder"] for r in rows if r["concurrency"] == 32)
        found.append(_t("throughput c=32, sidecar / forwarder (worst scheme)", worst, ">=", 1.2))
    if 1 in conc:
        worst = max(r["p50_added_us_sidecar"] for r in rows if r["concurrency"] == 1)
        found.append(_t("added p50 c=1 over direct, µs (worst scheme)", worst, "<=", 200))
    if result.get("intercept_ratios"):
        worst = min(r["rps_intercepted_over_path"] for r in result["intercept_ratios"])
        found.append(_t("throughput, intercepted HTTPS / path mode (worst cell)", worst, ">=", 0.8))
    found.append(_t("sidecar RSS under load, MiB", side["rss_load_peak_kib"] / MIB, "<=", 64))
    found.append(_t("start to /readyz 200, s (Vault up)", side["ready_s"], "<=", 1.0))
    found.append(
        _t(
            "Vault requests not explained by the cache sync",
            max(0.0, side["vault_requests_during_load"] - side["vault_sync_budget"]),
            "<=",
            0,
        )
    )
    return found


def _t(name: str, value: float, op: str, limit: float) -> dict[str, Any]:
    met = value >= limit if op == ">=" else value <= limit
    return {"name": name, "value": round(value, 3), "op": op, "target": limit, "met": met}


def table(result: dict[str, Any]) -> str:
    s = result["settings"]
    m = result["machine"]
    out = [
        f"load generator: {result['tool']}; {s['seconds']} s per cell after "
        f"{s['warmup']} s warm-up; forwarder loop: {s['forwarder_loop']}",
        f"machine: {m['cpus']} CPUs, load average {m['loadavg_before']:.2f} before, "
        f"{m['loadavg_after']:.2f} after; python {m['python']}; commit {result['code']['commit']}"
        f"{' + uncommitted sidecar/ edits' if result['code']['sidecar_dirty'] else ''}",
        "",
        f"{'scheme':<26}{'c':>3}  {'target':<17}{'req/s':>9}{'p50 µs':>9}{'p99 µs':>9}"
        f"{'err':>6}{'proxy CPU µs/req':>18}",
    ]
    for row in result["cells"]:
        cpu = row["proxy_cpu_us_per_req"]
        out.append(
            f"{row['scheme']:<26}{row['concurrency']:>3}  {row['target']:<17}"
            f"{row['rps']:>9.0f}{row['p50_us']:>9.0f}{row['p99_us']:>9.0f}"
            f"{row['errors'] + row['non2xx']:>6}{'' if cpu is None else f'{cpu:.0f}':>18}"
        )
    out += ["", f"{'scheme':<26}{'c':>3}{'c/a rps':>9}{'c/b rps':>9}{'+p50 c':>9}{'+p50 b':>9}"]
    out[-1] += f"{'CPU c/b':>9}   (+p50: µs added over direct)"
    for r in result["ratios"]:
        out.append(
            f"{r['scheme']:<26}{r['concurrency']:>3}{r['rps_sidecar_over_direct']:>9.2f}"
            f"{r['rps_sidecar_over_forwarder']:>9.2f}{r['p50_added_us_sidecar']:>9.0f}"
            f"{r['p50_added_us_forwarder']:>9.0f}"
            f"{r['cpu_us_per_req_sidecar_over_forwarder']:>9.2f}"
        )
    out += intercept_table(result)
    out += against_table(result)
    side = result["sidecar"]
    out += [
        "",
        f"sidecar: start -> /readyz 200 {side['ready_s']:.3f} s with {side['credentials']} "
        f"credentials in Vault ({side['ready_s_empty']:.3f} s with none)",
        f"sidecar: RSS idle {side['rss_idle_kib'] / MIB:.1f} MiB, under load (peak sampled) "
        f"{side['rss_load_peak_kib'] / MIB:.1f} MiB, after {side['rss_after_kib'] / MIB:.1f} "
        f"MiB, VmHWM {side['hwm_kib'] / MIB:.1f} MiB (run from {side.get('venv', '.venv')})",
        f"sidecar: {side['vault_requests_during_load']:.0f} Vault requests during "
        f"{side['load_seconds']:.0f} s of load and {side['proxied_requests']} proxied requests; "
        f"the cache sync every {side['refresh_interval']:.0f} s accounts for up to "
        f"{side['vault_sync_budget']}",
        "",
        "targets (benchmark figures, not assertions):",
    ]
    for t in result["targets"]:
        mark = "ok  " if t["met"] else "MISS"
        out.append(f"  [{mark}] {t['name']}: {t['value']} (target {t['op']} {t['target']})")
    return "\n".join(out)


def intercept_table(result: dict[str, Any]) -> list[str]:
    """Intercepted HTTPS (CONNECT + TLS, keep-alive in the tunnel) beside path mode."""
    rows = result.get("intercept_ratios") or []
    if not rows:
        return []
    out = [
        "",
        "intercepted HTTPS beside path mode (one sidecar with interception on, bundled generator)",
        f"{'scheme':<26}{'c':>3}{'rps path':>10}{'rps CONNECT':>13}{'ratio':>7}"
        f"{'CPU µs path':>13}{'CPU µs CONNECT':>16}{'load gen CPU path/CONNECT':>27}",
    ]
    for r in rows:
        out.append(
            f"{r['scheme']:<26}{r['concurrency']:>3}{r['rps_path']:>10.0f}"
            f"{r['rps_intercepted']:>13.0f}{r['rps_intercepted_over_path']:>7.2f}"
            f"{r['cpu_us_path'] or math.nan:>13.0f}{r['cpu_us_intercepted'] or math.nan:>16.0f}"
            f"{r['load_cpu_path']:>20.0%} / {r['load_cpu_intercepted']:.0%}"
        )
    return out


def against_table(result: dict[str, Any]) -> list[str]:
    """``--against REV``: this checkout's sidecar over REV's, measured in the same run."""
    rev = result["settings"].get("against")
    if not rev:
        return []
    other = f"sidecar@{rev}"
    out = [
        "",
        f"{'scheme':<26}{'c':>3}{'rps now':>9}{'rps ' + rev:>13}{'ratio':>7}"
        f"{'CPU µs now':>12}{'CPU µs ' + rev:>16}{'+p50 now':>10}{'+p50 ' + rev:>14}",
    ]
    prior = result["sidecar"].get("against", {})
    skipped = prior.get("skipped_schemes", [])
    for scheme in (n for n in result["settings"]["schemes"] if n not in skipped):
        for c in result["settings"]["concurrency"]:
            a, now, old = (cell(result, scheme, c, t) for t in ("direct", "sidecar", other))
            out.append(
                f"{scheme:<26}{c:>3}{now['rps']:>9.0f}{old['rps']:>13.0f}"
                f"{_div(now['rps'], old['rps']):>7.2f}"
                f"{now['proxy_cpu_us_per_req'] or math.nan:>12.0f}"
                f"{old['proxy_cpu_us_per_req'] or math.nan:>16.0f}"
                f"{now['p50_us'] - a['p50_us']:>10.0f}{old['p50_us'] - a['p50_us']:>14.0f}"
            )
    out += [f"{other}: no {n} scheme at that revision, not measured" for n in skipped]
    if prior:
        out.append(
            f"{other}: VmHWM {prior['hwm_kib'] / MIB:.1f} MiB, RSS after "
            f"{prior['rss_after_kib'] / MIB:.1f} MiB (same interpreter and dependencies)"
        )
    return out
