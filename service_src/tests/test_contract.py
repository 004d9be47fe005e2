"""Each step of the contract (payment-api.md), against real stubs and a real RabbitMQ."""

from __future__ import annotations

import json
import uuid

import pika
import pytest
from conftest import AMQP, CART, METRICS_SUMMARY_KEYS, Payment, Stubs


def test_anonymous_payment_follows_the_contract(payment: Payment, fresh_stubs: Stubs) -> None:
    reply = payment.pay("anonymous-42", headers={"X-Request-ID": "req-anon-42"})
    assert reply.status == 200, reply.raw
    orderid = reply.json["orderid"]
    assert str(uuid.UUID(orderid, version=4)) == orderid
    assert reply.json == {"orderid": orderid}
    assert reply.headers["x-request-id"] == "req-anon-42"

    user_calls = fresh_stubs.user.calls()
    assert [(c["method"], c["path"]) for c in user_calls] == [("GET", "/check/anonymous-42")]
    gateway_calls = fresh_stubs.gateway.calls()
    assert [(c["method"], c["path"]) for c in gateway_calls] == [("GET", "/charge")]
    cart_calls = fresh_stubs.cart.calls()
    assert [(c["method"], c["path"]) for c in cart_calls] == [("DELETE", "/cart/anonymous-42")]
    for call in user_calls + gateway_calls + cart_calls:
        assert call["headers"]["x-request-id"] == "req-anon-42"

    messages = payment.messages()
    assert len(messages) == 1
    props, body = messages[0]
    assert body == {"orderid": orderid, "user": "anonymous-42", "cart": CART}
    assert props.message_id == orderid
    assert props.delivery_mode == 2
    assert props.content_type == "application/json"
    assert props.headers["x-request-id"] == "req-anon-42"


def test_registered_user_gets_order_history(payment: Payment, fresh_stubs: Stubs) -> None:
    reply = payment.pay("stan")
    assert reply.status == 200, reply.raw
    orderid = reply.json["orderid"]
    calls = [(c["method"], c["path"]) for c in fresh_stubs.user.calls()]
    assert calls == [("GET", "/check/stan"), ("POST", "/order/stan")]
    history = fresh_stubs.user.calls()[1]
    assert json.loads(history["body"]) == {"orderid": orderid, "cart": CART}
    assert history["headers"]["content-type"] == "application/json"
    [(_, body)] = payment.messages()
    assert body["user"] == "stan"
    assert body["orderid"] == orderid


def test_topology_declared_by_the_publisher(payment: Payment) -> None:
    # passive declarations fail (channel closed) when something does not exist or differs
    conn = pika.BlockingConnection(AMQP)
    try:
        ch = conn.channel()
        ch.exchange_declare(payment.exchange, "direct", durable=True, passive=True)
        ch.queue_declare(payment.queue, durable=True, passive=True)
        # a redeclaration with the same settings is accepted, another type is refused
        ch.exchange_declare(payment.exchange, "direct", durable=True)
        ch.queue_declare(payment.queue, durable=True)
        with pytest.raises(pika.exceptions.ChannelClosedByBroker):
            ch.exchange_declare(payment.exchange, "fanout", durable=True)
    finally:
        conn.close()
    # the binding: a message published by hand with the routing key lands in the queue
    conn = pika.BlockingConnection(AMQP)
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        ch.basic_publish(payment.exchange, "orders", b'{"probe": 1}', mandatory=True)
    finally:
        conn.close()
    assert [body for _, body in payment.messages()] == [{"probe": 1}]


def test_health_and_liveness(payment: Payment) -> None:
    live = payment.get("/health/live")
    assert live.status == 200
    assert live.json == {"status": "ok"}
    health = payment.get("/health")
    assert health.status == 200
    body = health.json
    assert body["cart"] == "connected"
    assert body["user"] == "connected"
    assert body["rabbitmq"] == "connected"
    assert body["status"] == "ok"


def test_metrics_across_workers(payment: Payment, fresh_stubs: Stubs) -> None:
    before_sold = payment.metric("sold_count_total")
    before_ok = payment.metric("payments_total", 'result="success"')
    cart = json.loads(json.dumps(CART))
    cart["items"][0]["qty"] = 3
    for i in range(12):
        reply = payment.pay(f"anonymous-m{i}", cart)
        assert reply.status == 200
    assert payment.pay("anonymous-x", {"total": 0, "tax": 0}).status == 400
    text = payment.get("/metrics").raw.decode()
    assert payment.metric("sold_count_total") == before_sold + 36  # SHIP excluded
    assert payment.metric("payments_total", 'result="success"') == before_ok + 12
    for name in (
        'units_sold_bucket{le="5.0"}',
        'cart_value_bucket{le="2000.0"}',
        'units_sold_bucket{le="100.0"}',
        'cart_value_bucket{le="10000.0"}',
        "payment_dependency_latency_seconds_bucket{dependency=",
        'payments_total{result="invalid"}',
    ):
        assert name in text, name
    summary = payment.get("/metrics", headers={"Accept": "application/json"})
    assert summary.status == 200
    data = summary.json
    assert set(data) >= METRICS_SUMMARY_KEYS
    assert data["successful_payments"] == payment.metric("payments_total", 'result="success"')
    assert data["failed_payments"] >= 1
    assert 0 < data["success_rate"] < 1
    assert len(payment.messages()) == 12


def test_metrics_count_every_worker(payment: Payment) -> None:
    # two processes: the payments land on both, the sum must not depend on which one answers
    start = payment.metric("payments_total", 'result="success"')
    for i in range(20):
        assert payment.pay(f"anonymous-w{i}").status == 200
    values = {payment.metric("payments_total", 'result="success"') for _ in range(6)}
    assert values == {start + 20}
    payment.messages()


def test_one_json_log_line_per_request_without_secrets(payment: Payment) -> None:
    rid = f"log-{uuid.uuid4().hex}"
    assert payment.pay("anonymous-log", headers={"X-Request-ID": rid}).status == 200
    lines = [
        json.loads(line)
        for line in payment.log.read_text().splitlines()
        if line.startswith("{") and rid in line
    ]
    assert len(lines) == 1
    assert lines[0]["status"] == 200
    assert lines[0]["path"] == "/pay/anonymous-log"
    json_lines = [line for line in payment.log.read_text().splitlines() if line.startswith("{")]
    assert json_lines
    for line in json_lines:
        assert "HAL-1" not in line  # no cart content
        assert payment.env["AMQP_PASS"] not in line  # no credentials
    payment.messages()
