"""Fault injection at every step of a payment, in process (the real app and Service, the
network faked): every charge ends as one delivered order, no key is charged twice, no refused
request is charged, and nothing after a charge answers 500 or releases the key."""

from __future__ import annotations

import copy
import json
import sqlite3
from typing import Any

import pytest
from conftest import CART
from inproc import World, check
from payment import metrics
from payment.records import CHARGED, DELIVERED, PENDING, UNKNOWN
from payment.validation import MAX_QTY


def cart(**changes: Any) -> dict[str, Any]:
    c = copy.deepcopy(CART)
    c.update(changes)
    return c


def deep(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = {"x": value}
    return value


def settle(world: World) -> None:
    world.broker.mode = "up"
    world.drain()
    check(world, settled=True)


@pytest.mark.parametrize(
    "body",
    [
        cart(items=[{**CART["items"][0], "qty": 10**400}, CART["items"][1]]),  # absurd qty
        cart(items=[{**CART["items"][0], "qty": MAX_QTY + 1}, CART["items"][1]]),
        cart(extra=deep(200)),  # an unknown field nested very deep
        cart(extra=[1e308, 10**30]),  # an integer no JSON reader keeps exactly
        cart(extra={"n": "x" * 20000}),
    ],
    ids=["qty-huge", "qty-max", "deep", "big-int", "long-string"],
)
def test_carts_that_would_fail_after_the_charge_are_refused_before(body: Any) -> None:
    world = World()
    reply = world.pay("anonymous-1", key="k1", cart=body)
    assert reply.status == 400, reply.body
    assert world.deps.gateway.calls == []
    check(world, settled=False)


def test_infinity_in_an_unknown_field_is_refused() -> None:
    world = World()
    raw = json.dumps(CART)[:-1] + ', "extra": {"v": 1e999}}'
    reply = world.client.post("/pay/anonymous-1", data=raw, content_type="application/json")
    assert reply.status_code == 400
    assert world.deps.gateway.calls == []


def test_exception_after_the_charge_is_a_200_and_keeps_the_key(monkeypatch) -> None:
    world = World()
    monkeypatch.setattr(
        world.service, "_call_after", lambda *a: (_ for _ in ()).throw(RuntimeError("bug"))
    )
    first = world.pay("stan", key="k1")
    assert first.status == 200, first.body
    retry = world.pay("stan", key="k1")
    assert retry.status == 200 and retry.body == first.body
    assert len(world.deps.gateway.charged) == 1
    settle(world)


def test_cart_delete_raising_anything_does_not_fail_the_payment() -> None:
    world = World()
    world.deps.cart_fault = RuntimeError("not a DependencyError")
    assert world.pay("anonymous-1").status == 200
    settle(world)


def test_metrics_failing_does_not_fail_the_payment(monkeypatch) -> None:
    world = World()

    def boom(*_a: Any) -> None:
        raise OverflowError("metrics")

    monkeypatch.setattr(metrics.SOLD, "inc", boom)
    monkeypatch.setattr(metrics.CART_VALUE, "observe", boom)
    reply = world.pay("anonymous-1", key="k1")
    assert reply.status == 200, reply.body
    assert world.pay("anonymous-1", key="k1").body == reply.body
    settle(world)


@pytest.mark.parametrize("mode", ["down", "lose_confirm", "drop"])
def test_broker_down_or_confirm_lost(mode: str) -> None:
    world = World()
    world.broker.mode = mode
    replies = [world.pay(f"anonymous-{i}", key=f"k{i}") for i in range(3)]
    assert {r.status for r in replies} == {200}
    states = {r.state for r in world.service.records.list((CHARGED, DELIVERED))}
    assert states == {CHARGED}  # durable, not yet confirmed
    assert world.service.records.undelivered() == 3
    check(world, settled=False)
    settle(world)
    assert world.service.records.undelivered() == 0
    if mode == "lose_confirm":  # stored by the broker, then published again: same message_id
        assert len(world.broker.queue) == 6
        assert len({mid for mid, _ in world.broker.queue}) == 3


def test_record_write_failing_before_the_charge_charges_nothing(monkeypatch) -> None:
    world = World()

    def fail(*_a: Any) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(world.service.records, "create", fail)
    reply = world.pay("anonymous-1", key="k1")
    assert reply.status == 503
    assert world.deps.gateway.calls == []
    monkeypatch.undo()
    assert world.pay("anonymous-1", key="k1").status == 200  # the key was released
    settle(world)


@pytest.mark.parametrize("broker", ["up", "down"])
def test_charged_write_failing(monkeypatch, broker: str) -> None:
    world = World()
    world.broker.mode = broker

    def fail(*_a: Any) -> bool:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(world.service.records, "charged", fail)
    reply = world.pay("stan", key="k1")
    monkeypatch.undo()
    if broker == "up":  # the broker's confirm made the order safe
        assert reply.status == 200
        [(mid, _)] = world.broker.queue
        assert mid == reply.body["orderid"]
    else:  # charged, no order: 503, kept for the key; the record goes to ops as unknown
        assert reply.status == 503 and reply.body["dependency"] == "state"
        assert world.deps.deleted == []  # the cart stays: the order is not durable
    retry = world.pay("stan", key="k1")
    assert retry.status == reply.status
    assert len(world.deps.gateway.charged) == 1
    check(world, settled=False)


def test_lost_finish_and_expired_claim_is_answered_from_the_record(monkeypatch) -> None:
    world = World()
    store = world.service.idempotency

    def lost(*_a: Any) -> None:
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(store, "finish", lost)
    first = world.pay("stan", key="k1")
    assert first.status == 200
    monkeypatch.undo()
    # the claim's lease runs out (its worker is gone): the key can be claimed again
    store._db().execute("UPDATE idempotency SET expires = 0")
    retry = world.pay("stan", key="k1")
    assert retry.status == 200 and retry.body == first.body
    assert retry.headers.get("Idempotent-Replayed") == "true"
    assert len(world.deps.gateway.charged) == 1
    settle(world)


def test_another_body_after_an_expired_claim_does_not_hide_the_order() -> None:
    world = World()
    first = world.pay("stan", key="k1")
    world.service.idempotency._db().execute("UPDATE idempotency SET expires = 0")
    other = copy.deepcopy(CART)
    other["items"][0]["qty"] = 2
    assert world.pay("stan", key="k1", cart=other).status == 422
    retry = world.pay("stan", key="k1")
    assert retry.status == 200 and retry.body == first.body
    assert len(world.deps.gateway.charged) == 1


@pytest.mark.parametrize("mode", ["timeout", "server_error"])
def test_gateway_timeout_is_unknown_never_published_and_listed(mode: str) -> None:
    """No answer, or a 5xx (which may come after the money moved: before, it was `declined`
    and the key released, so the retry was charged again): unknown, never a second charge."""
    world = World()
    world.deps.gateway.mode = mode
    reply = world.pay("stan", key="k1")
    assert reply.status == 504
    world.deps.gateway.mode = "ok"
    world.service.idempotency._db().execute("UPDATE idempotency SET expires = 0")
    assert world.pay("stan", key="k1").status == 504  # from the record: no second charge
    settle(world)
    assert world.broker.queue == []
    [record] = world.service.records.list((UNKNOWN,))
    assert world.service.records.counts()[UNKNOWN] == 1
    assert record.request_id == reply.rid


def test_worker_killed_in_the_charge_becomes_unknown() -> None:
    world = World()
    records = world.service.records
    records.create("o-1", "stan", "k1", "fp", b'{"orderid":"o-1"}', "req-x")
    records._db().execute("UPDATE payments SET created = created - 3600")
    stale = world.service.drainer.sweep(force=True)
    assert stale == ["o-1"]
    assert records.get("o-1").state == UNKNOWN
    world.drain()
    assert world.broker.queue == []  # never published blindly


def test_a_pending_record_of_the_key_is_in_flight() -> None:
    world = World()
    world.pay("stan", key="k1")  # claims and completes
    records = world.service.records
    orderid = world.sent[0].body["orderid"]
    records._db().execute("UPDATE payments SET state = ? WHERE orderid = ?", (PENDING, orderid))
    world.service.idempotency._db().execute("UPDATE idempotency SET expires = 0")
    reply = world.pay("stan", key="k1")
    assert reply.status == 409 and "Retry-After" in reply.headers
    assert len(world.deps.gateway.charged) == 1


def test_purge_keeps_open_records_and_keyed_ones_for_the_ttl() -> None:
    world = World()
    records = world.service.records
    for orderid, key, state in (
        ("o-keyless", None, DELIVERED),
        ("o-keyed", "k1", DELIVERED),
        ("o-charged", None, CHARGED),
        ("o-unknown", None, UNKNOWN),
    ):
        records.create(orderid, "stan", key, "fp", b"{}", "r-" + orderid)
        records._db().execute("UPDATE payments SET state = ? WHERE orderid = ?", (state, orderid))
    records._db().execute("UPDATE payments SET updated = updated - 7200")  # two hours ago
    records.purge(age=86400)
    left = {r.orderid for r in records.list(("delivered", "charged", "unknown"))}
    assert left == {"o-keyed", "o-charged", "o-unknown"}
    records.purge(age=60)  # past the TTL: only what still needs the service or ops stays
    assert {r.orderid for r in records.list(("delivered", "charged", "unknown"))} == {
        "o-charged",
        "o-unknown",
    }
    assert records.counts() == {"pending": 0, "charged": 1, "unknown": 1}
