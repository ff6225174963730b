"""Prometheus metrics, served at ``/metrics`` on the admin listener.

Counters that other parts already keep (Vault requests, cache hits, token fetches) are read at
scrape time by a collector, so the hot path pays nothing for them. Labels are bounded: upstream
names come from config, status is a class (``2xx``), outcomes are a fixed set. Never a secret.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from sidecar.runtime import Runtime

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class Traffic:
    """One upstream's request counts by status class and its latency histogram.

    prometheus_client's Counter and Histogram take a lock and do label lookups on every
    update; per request that was a few µs. These are plain lists, turned into metric families
    when ``/metrics`` is scraped (on the same event loop, so a scrape sees a consistent view).
    """

    __slots__ = ("buckets", "classes", "total")

    def __init__(self) -> None:
        self.classes = [0] * len(_CLASSES)
        self.buckets = [0] * (len(BUCKETS) + 1)  # the last one is +Inf only
        self.total = 0.0

    def cumulative(self) -> list[tuple[str, float]]:
        running = 0
        out: list[tuple[str, float]] = []
        for bound, count in zip((*map(str, BUCKETS), "+Inf"), self.buckets, strict=True):
            running += count
            out.append((bound, running))
        return out


class Metrics:
    """One registry per runtime, so tests and several runtimes in one process stay apart."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.refused = Counter(
            "sidecar_proxy_refused",
            "Requests the sidecar answered itself, by error code",
            ["code"],
            registry=self.registry,
        )
        self.admin_refused = Counter(
            "sidecar_admin_refused",
            "Admin and health requests refused, by error code",
            ["code"],
            registry=self.registry,
        )
        self.config_reloads = Counter(
            "sidecar_config_reloads",
            "Config reloads by outcome",
            ["outcome"],
            registry=self.registry,
        )
        # outcome is valid|invalid only: never a credential's field, never a signature
        self.webhook_verifications = Counter(
            "sidecar_webhook_verifications",
            "Webhook signatures checked on the local API, by outcome",
            ["outcome"],
            registry=self.registry,
        )
        for outcome in ("valid", "invalid"):
            self.webhook_verifications.labels(outcome)
        # upstream names come from config; never the masked value
        self.answer_redactions = Counter(
            "sidecar_answer_redactions",
            "Injected secrets masked in relayed answer bodies, by upstream",
            ["upstream"],
            registry=self.registry,
        )
        self.traffic: dict[str, Traffic] = {}

    def observe(self, upstream: str, status: int, seconds: float) -> None:
        """Once per proxied request: plain arithmetic, no lock (one event loop writes)."""
        traffic = self.traffic.get(upstream)
        if traffic is None:
            traffic = self.traffic[upstream] = Traffic()
        traffic.classes[min(max(status // 100, 1), 5) - 1] += 1
        traffic.buckets[bisect_left(BUCKETS, seconds)] += 1
        traffic.total += seconds

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
        requests = CounterMetricFamily(
            "sidecar_proxy_requests",
            "Proxied requests by upstream and status class",
            labels=["upstream", "status_class"],
        )
        latency = HistogramMetricFamily(
            "sidecar_proxy_request_seconds",
            "Proxied request time, upstream send to last byte relayed",
            labels=["upstream"],
        )
        for name, traffic in sorted(rt.metrics.traffic.items()):
            for label, count in zip(_CLASSES, traffic.classes, strict=True):
                if count:
                    requests.add_metric([name, label], count)
            latency.add_metric([name], traffic.cumulative(), traffic.total)
        yield requests
        yield latency
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
            counts = upstream.scheme.counters()  # declared by the Scheme protocol
            if "token_requests" in counts:
                tokens.add_metric([name, "requested"], counts["token_requests"])
                tokens.add_metric([name, "failed"], counts.get("token_failures", 0))
        yield tokens
        ready = GaugeMetricFamily(
            "sidecar_ready", "1 when Vault is authenticated and the cache loaded"
        )
        ready.add_metric([], 1.0 if rt.ready else 0.0)
        yield ready
        loops = CounterMetricFamily(
            "sidecar_background_errors", "Background loop failures", labels=["loop", "error"]
        )
        for (loop, kind), count in sorted(rt.loop_errors.items()):
            loops.add_metric([loop, kind], count)
        yield loops
        creds = GaugeMetricFamily("sidecar_cached_credentials", "Credentials held in memory")
        creds.add_metric([], float(rt.store.cached_count))
        yield creds
        yield _client_cert_expiry(rt)


def _client_cert_expiry(rt: Runtime) -> Metric:
    """Seconds until each loaded client certificate's notAfter (negative once expired)."""
    gauge = GaugeMetricFamily(
        "sidecar_client_certificate_expiry_seconds",
        "Seconds until the credential's client certificate expires (mtls)",
        labels=["credential"],
    )
    seen: dict[str, float] = {}
    for upstream in rt.upstreams.values():
        keys = upstream.keys
        left = None if keys is None else keys.seconds_left()
        if keys is not None and left is not None:
            seen[keys.credential] = left
    for name, left in sorted(seen.items()):
        gauge.add_metric([name], left)
    return gauge
