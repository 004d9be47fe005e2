"""roles/payment/filter_plugins/payment_health.py: the one rule for "ready" that the health
gate (tasks/activate.yml) applies before and after a restart."""

from __future__ import annotations

import importlib.util
from pathlib import Path

PLUGIN = Path(__file__).resolve().parents[3] / "roles/payment/filter_plugins/payment_health.py"
_spec = importlib.util.spec_from_file_location("payment_health", PLUGIN)
health = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(health)
ready = health.payment_ready


def test_200_with_the_broker_connected_is_ready():
    assert ready({"status": 200, "json": {"status": "ok", "rabbitmq": "connected"}})


def test_a_body_without_the_broker_field_counts_as_connected():
    assert ready({"status": 200, "json": {"status": "ok"}})
    assert ready({"status": 200})


def test_503_or_a_disconnected_broker_is_not_ready():
    assert not ready({"status": 503, "json": {"rabbitmq": "connected"}})
    assert not ready({"status": 200, "json": {"rabbitmq": "disconnected"}})


def test_a_skipped_or_missing_result_is_not_ready():
    assert not ready({})
    assert not ready({"skipped": True, "changed": False})
    assert not ready({"status": -1, "msg": "Status code was -1: connection refused"})
    assert not ready(None)
