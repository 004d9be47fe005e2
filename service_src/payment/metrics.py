"""Prometheus metrics (multiprocess mode: correct across uWSGI workers)."""

from __future__ import annotations

import os
import time
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
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
OUTBOX = Counter("payment_outbox_orders", "Orders through the local outbox", ["event"])

CONTENT_TYPE = CONTENT_TYPE_LATEST
SUCCESS = "success"


def _registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=os.environ["PROMETHEUS_MULTIPROC_DIR"])
    return registry


def exposition() -> bytes:
    return generate_latest(_registry())


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
