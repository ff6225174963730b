"""Prometheus metrics: names, bounded labels, and that the counts move with traffic."""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from tests.integration.conftest import MakeConfig, MakeSidecar

KEY = "SECR_metrics_key_31"


def sample(text: str, name: str, labels: str = "") -> float:
    pattern = rf"^{re.escape(name)}{re.escape('{' + labels + '}') if labels else ''} ([0-9.e+]+)$"
    match = re.search(pattern, text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


async def test_metrics_names_labels_and_counts_move(
    aiohttp_server: Any, make_config: MakeConfig, make_sidecar: MakeSidecar
) -> None:
    """Proxied requests, refusals, cache lookups and Vault requests are counted; no secret shows."""

    async def ok(request: web.Request) -> web.Response:
        return web.json_response(
            {}, status=200 if request.headers.get("Authorization") == KEY else 401
        )

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", ok)
    peer = await aiohttp_server(app)
    cfg = make_config(
        {
            "pay": {
                "url": str(peer.make_url("/")).rstrip("/"),
                "scheme": "api_key",
                "credential": "pay",
                "environment": "sandbox",
            }
        }
    )
    sc = await make_sidecar(cfg)
    await sc.admin.put("/v1/credentials/pay", json={"upstream": "pay", "fields": {"api_key": KEY}})
    before = await (await sc.admin.get("/metrics")).text()
    for _ in range(5):
        await sc.proxy.get("/pay/x")
    await sc.proxy.get("/nowhere/x")
    r = await sc.admin.get("/metrics")
    assert r.headers["Content-Type"].startswith("text/plain")
    text = await r.text()
    assert sample(text, "sidecar_proxy_requests_total", 'status_class="2xx",upstream="pay"') == 5
    assert sample(text, "sidecar_proxy_request_seconds_count", 'upstream="pay"') == 5
    assert sample(text, "sidecar_proxy_request_seconds_bucket", 'le="+Inf",upstream="pay"') == 5
    buckets = [
        float(v)
        for v in re.findall(
            r'^sidecar_proxy_request_seconds_bucket\{le="[^"]+",upstream="pay"\} (\S+)$',
            text,
            re.MULTILINE,
        )
    ]
    assert len(buckets) == 15 and buckets == sorted(buckets)  # cumulative, 14 bounds + +Inf
    assert 0 < sample(text, "sidecar_proxy_request_seconds_sum", 'upstream="pay"') < 5
    assert sample(text, "sidecar_proxy_refused_total", 'code="SC4001"') == 1
    hits = sample(text, "sidecar_cache_lookups_total", 'result="hit"')
    assert hits - sample(before, "sidecar_cache_lookups_total", 'result="hit"') == 5
    assert sample(text, "sidecar_vault_requests_total", 'outcome="ok"') > 0
    assert sample(text, "sidecar_ready") == 1 and sample(text, "sidecar_cached_credentials") == 1
    assert KEY not in text
    label_values = set(re.findall(r'="([^"]*)"', text))
    assert label_values <= {
        "pay",
        "2xx",
        "ok",
        "error",
        "hit",
        "miss",
        "stale",
        "SC4001",
        "requested",
        "failed",
        "applied",
        "rejected",
        "valid",  # sidecar_webhook_verifications_total{outcome}
        "invalid",
    } | {v for v in label_values if re.fullmatch(r"[0-9.e+inf+]+|\+Inf", v)}
