"""Prometheus metrics, served at ``/metrics`` on the admin listener.

Counters that other parts already keep (Vault requests, cache hits, token fetches) are read at
scrape time by a collector, so the hot path pays nothing for them. Labels are bounded: upstream
names come from config, status is a class (``2xx``), outcomes are a fixed set. Never a secret.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from sidecar.runtime import Runtime

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")


class Metrics:
    """One registry per runtime, so tests and several runtimes in one process stay apart."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "sidecar_proxy_requests",
            "Proxied requests by upstream and status class",
            ["upstream", "status_class"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "sidecar_proxy_request_seconds",
            "Proxied request time, upstream send to last byte relayed",
            ["upstream"],
            registry=self.registry,
            buckets=(
                0.0005,
                0.001,
                0.0025,
                0.005,
                0.01,
                0.025,
                0.05,
                0.1,
                0.25,
                0.5,
                1,
                2.5,
                5,
                10,
            ),
        )
        self.refused = Counter(
            "sidecar_proxy_refused",
            "Requests the sidecar answered itself, by error code",
            ["code"],
            registry=self.registry,
        )
        self.config_reloads = Counter(
            "sidecar_config_reloads",
            "Config reloads by outcome",
            ["outcome"],
            registry=self.registry,
        )
        self._children: dict[tuple[str, int], Counter] = {}
        self._latency: dict[str, Histogram] = {}

    def observe(self, upstream: str, status: int, seconds: float) -> None:
        key = (upstream, status // 100)
        child = self._children.get(key)
        if child is None:
            label = _CLASSES[min(max(status // 100, 1), 5) - 1]
            child = self._children[key] = self.requests.labels(upstream, label)
        child.inc()
        timer = self._latency.get(upstream)
        if timer is None:
            timer = self._latency[upstream] = self.latency.labels(upstream)
        timer.observe(seconds)

    def watch(self, runtime: Runtime) -> None:
        self.registry.register(_RuntimeCollector(runtime))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _RuntimeCollector(Collector):
    """Reads the runtime's own counters at scrape time."""

    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime

    def collect(self) -> Iterator[Metric]:
        rt = self.rt
        vault = CounterMetricFamily(
            "sidecar_vault_requests", "Requests made to Vault", labels=["outcome"]
        )
        vault.add_metric(["ok"], rt.vault.requests - rt.vault.errors)
        vault.add_metric(["error"], rt.vault.errors)
        yield vault
        cache = CounterMetricFamily(
            "sidecar_cache_lookups", "Credential cache lookups", labels=["result"]
        )
        cache.add_metric(["hit"], rt.store.cache_hits)
        cache.add_metric(["miss"], rt.store.cache_misses)
        cache.add_metric(["stale"], rt.store.stale_serves)
        yield cache
        tokens = CounterMetricFamily(
            "sidecar_token_fetches",
            "OAuth2 token requests by upstream",
            labels=["upstream", "outcome"],
        )
        for name, upstream in rt.upstreams.items():
            for part in getattr(upstream.scheme, "parts", [upstream.scheme]):
                if hasattr(part, "token_requests"):
                    tokens.add_metric([name, "requested"], part.token_requests)
                    tokens.add_metric([name, "failed"], getattr(part, "token_failures", 0))
        yield tokens
        ready = GaugeMetricFamily(
            "sidecar_ready", "1 when Vault is authenticated and the cache loaded"
        )
        ready.add_metric([], 1.0 if rt.ready else 0.0)
        yield ready
        creds = GaugeMetricFamily("sidecar_cached_credentials", "Credentials held in memory")
        creds.add_metric([], float(rt.store.cached_count))
        yield creds
