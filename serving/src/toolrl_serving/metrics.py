"""Prometheus metrics (prometheus-client), one registry per app.

Names are namespaced `toolrl_serving_*`. Engine gauges (queue depth, batch
size, active sequences) are read from the engine when /metrics is scraped, so
they are never stale.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160)
KNOWN_PATHS = ("/v1/chat/completions", "/v1/completions", "/v1/models", "/generate", "/health", "/metrics")


def _metric_name(key: str) -> str:
    name = "".join(c if c.isalnum() else "_" for c in key.lower())
    return name[:-6] if name.endswith("_total") else name  # gauges must not end in _total


class _EngineCollector(Collector):
    def __init__(self, stats: Callable[[], Any]):
        self._stats = stats

    def collect(self) -> Iterable[GaugeMetricFamily]:
        try:
            s = self._stats()
        except Exception:  # no engine yet (starting) or it is shutting down
            return []
        extra = [GaugeMetricFamily(f"toolrl_serving_engine_{_metric_name(k)}", f"The backend's '{k}' statistic.",
                                   value=v) for k, v in sorted((s.extra or {}).items())
                 if k not in ("queue_depth", "batch_size")]
        return extra + [
            GaugeMetricFamily("toolrl_serving_queue_depth", "Requests waiting for a batch slot.", value=s.queue_depth),
            GaugeMetricFamily("toolrl_serving_batch_size", "Sequences in the batch being decoded.", value=s.batch_size),
            GaugeMetricFamily("toolrl_serving_active_sequences", "Sequences queued or being generated.",
                              value=s.active),
        ]


class ServerMetrics:
    """The server's counters and histograms."""

    def __init__(self, engine_stats: Callable[[], Any]):
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("toolrl_serving_requests", "HTTP requests by endpoint and status code.",
                                ["endpoint", "status"], registry=r)
        self.latency = Histogram("toolrl_serving_request_latency_seconds",
                                 "Time from request start to the last byte of the response.", ["endpoint"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.ttft = Histogram("toolrl_serving_time_to_first_token_seconds",
                              "Streaming: time from request start to the first generated text.",
                              buckets=LATENCY_BUCKETS, registry=r)
        self.prompt_tokens = Counter("toolrl_serving_prompt_tokens", "Prompt tokens processed.", registry=r)
        self.generation_tokens = Counter("toolrl_serving_generation_tokens", "Tokens generated.", registry=r)
        self.in_flight = Gauge("toolrl_serving_requests_in_flight", "HTTP requests being handled.", registry=r)
        self.cancelled = Counter("toolrl_serving_cancelled", "Generations cancelled because the client left.",
                                 registry=r)
        r.register(_EngineCollector(engine_stats))

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def count_tokens(self, prompt: int, generated: int) -> None:
        self.prompt_tokens.inc(prompt)
        self.generation_tokens.inc(generated)


class MetricsMiddleware:
    """Counts requests and times them to the end of the response body (streams included)."""

    def __init__(self, app: ASGIApp, metrics: Callable[[], ServerMetrics | None]):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        m = self.metrics() if scope["type"] == "http" else None
        if m is None:
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        endpoint = path if path in KNOWN_PATHS else "other"
        status = 500
        start = time.perf_counter()

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        m.in_flight.inc()
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            m.in_flight.dec()
            m.requests.labels(endpoint, str(status)).inc()
            m.latency.labels(endpoint).observe(time.perf_counter() - start)
