"""Prometheus metrics, one registry per app so several apps (tests) can live in one process."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.requests = Counter("rnn_requests", "HTTP requests by route and status", ["route", "status"], registry=r)
        self.duration = Histogram(
            "rnn_request_duration_seconds", "request latency by route", ["route"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.batch_size = Histogram("rnn_batch_size", "texts per classifier forward", buckets=BATCH_BUCKETS, registry=r)
        self.queue_depth = Gauge("rnn_queue_depth", "texts waiting for the classifier", registry=r)
        self.active_streams = Gauge("rnn_generation_active_streams", "generation streams being stepped", registry=r)
        self.generated_tokens = Counter("rnn_generated_tokens", "characters generated", registry=r)
        self.in_flight = Gauge("rnn_requests_in_flight", "requests being served or queued", registry=r)
        self.rejected = Counter("rnn_requests_rejected", "requests refused with 503 (overload)", registry=r)
        self.reloads = Counter("rnn_model_reloads", "hot reloads of the models by outcome", ["outcome"], registry=r)
