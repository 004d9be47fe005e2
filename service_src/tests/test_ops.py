"""payment.ops against a real state dir and the real broker: lists unknown and undelivered
payments, shows one, republishes one through publisher confirms; never charges."""

from __future__ import annotations

import json
import tempfile
import uuid

import pytest
from conftest import delete_topology, drain_queue
from payment import ops
from payment.config import Settings
from payment.records import CHARGED, DELIVERED, UNKNOWN, Records


@pytest.fixture
def setup(rabbitmq: None):
    tag = uuid.uuid4().hex[:8]
    settings = Settings(
        state_dir=tempfile.mkdtemp(prefix="payment-ops-"),
        amqp_host="127.0.0.1",
        amqp_user="guest",  # the local test broker's user (the defaults are the role's)
        amqp_pass="guest",
        amqp_exchange=f"test-ops-{tag}",
        amqp_queue=f"test-ops-orders-{tag}",
    )
    records = Records(settings.state_dir)
    for orderid, state in (("o-charged", CHARGED), ("o-unknown", UNKNOWN)):
        body = json.dumps({"orderid": orderid, "user": "stan", "cart": {}}).encode()
        records.create(orderid, "stan", "k-" + orderid, "fp", body, "req-" + orderid)
        if state == CHARGED:
            assert records.charged(orderid, 0.0)
        else:
            assert records.settle(orderid, UNKNOWN, "gateway: read_timeout")
    yield settings, records
    delete_topology(settings.amqp_exchange, settings.amqp_queue)


def test_list_and_show(setup, capsys) -> None:
    settings, _ = setup
    assert ops.main(["list", "--json"], settings) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {(r["orderid"], r["state"]) for r in rows} == {
        ("o-charged", CHARGED),
        ("o-unknown", UNKNOWN),
    }
    assert ops.main(["list", "--state", "unknown"], settings) == 0
    out = capsys.readouterr().out
    assert "unknown=1" in out and "o-unknown" in out and "o-charged" not in out
    assert ops.main(["show", "o-unknown"], settings) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["order"]["orderid"] == "o-unknown" and shown["note"].startswith("gateway")
    assert ops.main(["show", "nope"], settings) == 2


def test_republish_uses_publisher_confirms(setup) -> None:
    settings, records = setup
    assert ops.main(["republish", "o-charged"], settings) == 0
    assert records.get("o-charged").state == DELIVERED
    # unknown: only once the operator confirmed the charge with the gateway
    assert ops.main(["republish", "o-unknown"], settings) == 3
    assert records.get("o-unknown").state == UNKNOWN
    assert ops.main(["republish", "o-unknown", "--confirmed-charged"], settings) == 0
    assert records.get("o-unknown").state == DELIVERED
    messages = drain_queue(settings.amqp_queue)
    assert [(p.message_id, b["orderid"]) for p, b in messages] == [
        ("o-charged", "o-charged"),
        ("o-unknown", "o-unknown"),
    ]
    assert all(p.delivery_mode == 2 for p, _ in messages)


def test_broker_down_leaves_the_record(setup) -> None:
    settings, records = setup
    down = Settings(**{**settings.__dict__, "amqp_port": 1})
    assert ops.main(["republish", "o-charged"], down) == 1
    assert records.get("o-charged").state == CHARGED
