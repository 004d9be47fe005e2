"""Prometheus metrics (multiprocess mode: correct across uWSGI workers)."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector

# RoboShop's own metrics (its dashboards use these names and buckets).
SOLD = Counter("sold_count", "Running count of items sold")
UNITS = Histogram("units_sold", "Distribution of items sold", buckets=(1, 2, 5, 10, 100))
CART_VALUE = Histogram(
    "cart_value",
    "Distribution of cart values",
    buckets=(100, 200, 500, 1000, 2000, 5000, 10000),
)
# Ours.
PAYMENTS = Counter("payments", "Payment requests by result", ["result"])
DEP_LATENCY = Histogram(
    "payment_dependency_latency_seconds",
    "Latency of calls to dependencies",
    ["dependency", "operation"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
DEP_ERRORS = Counter(
    "payment_dependency_errors", "Failed dependency calls", ["dependency", "operation"]
)
OUTBOX = Counter(
    "payment_outbox_orders",
    "Charged orders the request did not see confirmed (stored), later confirmed (delivered)",
    ["event"],
)
UNKNOWN = Counter("payment_unknown", "Payments whose charge outcome is unknown", ["cause"])
INTERNAL = Counter(
    "payment_internal_errors", "Errors caught after a charge (the payment still answered)", ["step"]
)

CONTENT_TYPE = CONTENT_TYPE_LATEST
SUCCESS = "success"


class RecordsCollector:
    """payment_records{state}: this host's payment records by state, read at scrape time."""

    def __init__(self, counts: Callable[[], dict[str, int]]) -> None:
        self.counts = counts

    def collect(self) -> Iterator[Metric]:
        gauge = GaugeMetricFamily(
            "payment_records", "Payment records on this host by state", labels=["state"]
        )
        try:
            for state, n in sorted(self.counts().items()):
                gauge.add_metric([state], n)
        except Exception:
            return
        yield gauge


def _registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=os.environ["PROMETHEUS_MULTIPROC_DIR"])
    return registry


def exposition(counts: Callable[[], dict[str, int]] | None = None) -> bytes:
    registry = _registry()
    if counts is not None:
        registry.register(RecordsCollector(counts))
    return generate_latest(registry)


def safe(action: Callable[[], Any], step: str) -> None:
    """A metric update after a charge: its failure is counted, never raised. Everything
    that may fail goes inside `action` (a lambda): `safe(X.labels(a).inc, ...)` would run
    labels() before safe() could catch it."""
    try:
        action()
    except Exception:
        with contextlib.suppress(Exception):
            INTERNAL.labels(step).inc()


def inc(counter: Counter, *labels: str, step: str = "metrics") -> None:
    """counter{labels} += 1, never raising (safe): labels() is inside the guard too."""
    safe(lambda: (counter.labels(*labels) if labels else counter).inc(), step)


def summary(started: float) -> dict[str, Any]:
    counts: dict[str, float] = {}
    for metric in _registry().collect():
        if metric.name == "payments":
            for sample in metric.samples:
                if sample.name == "payments_total":
                    result = sample.labels.get("result", "")
                    counts[result] = counts.get(result, 0) + sample.value
    total = int(sum(counts.values()))
    ok = int(counts.get(SUCCESS, 0))
    return {
        "total_payments": total,
        "successful_payments": ok,
        "failed_payments": total - ok,
        "success_rate": round(ok / total, 4) if total else 0.0,
        "uptime": round(time.time() - started, 1),
        "by_result": {k: int(v) for k, v in sorted(counts.items())},
    }
