"""Faults an outside review found (2026-12-02), in process, the network faked as in
test_money.py; each test failed on the code before its fix:
- a metric failing after the charge (the payments counter, an error counter's labels(), the
  gateway call's latency): never a 500, never a taken charge turned `unknown`;
- the thread committing a group of `pending` rows interrupted (a BaseException): no other
  thread of the group charges without its row;
- the broker's late confirm arriving before the `charged` write: delivered, not published
  again;
- an integer beyond float range: a 400, not a 500."""

from __future__ import annotations

import copy
import json
import threading
import time
from typing import Any

import pytest
from conftest import CART
from inproc import FakeDeps, FakePublisher, World, check, offline  # noqa: F401 (fixture)
from payment import metrics
from payment.amqp import Ticket
from payment.config import Settings
from payment.deps import DependencyError, Deps
from payment.records import CHARGED, DELIVERED

pytestmark = pytest.mark.usefixtures("offline")


def boom(*_a: Any, **_k: Any) -> Any:
    raise OverflowError("metrics")


# -- 1. metric failures after the charge are not contained ------------------------------------
def test_payments_counter_failing_after_the_charge_is_not_a_500(monkeypatch) -> None:
    """app.py: `metrics.PAYMENTS.labels(...).inc()` runs after the charge, outside
    metrics.safe: a metric failure (the fault test_money injects into SOLD/CART_VALUE)
    answers 500 for a charged, delivered payment."""
    world = World()
    monkeypatch.setattr(metrics.PAYMENTS, "labels", boom)
    reply = world.pay("stan", key="k1")
    assert len(world.deps.gateway.charged) == 1
    assert reply.status != 500, reply.body


def test_error_counters_failing_after_the_charge_leave_the_key_unanswered(monkeypatch) -> None:
    """service.py: `metrics.safe(metrics.X.labels(...).inc, ...)` evaluates labels() before
    safe() is entered. Cart down after the charge (a normal event) + metrics failing: the
    except handlers themselves raise, the payment answers 500 and its answer is never stored
    for the key (the retry gets 409 instead of the replayed 200)."""
    world = World()
    monkeypatch.setattr(metrics.DEP_ERRORS, "labels", boom)
    monkeypatch.setattr(metrics.INTERNAL, "labels", boom)
    world.deps.cart_fault = DependencyError("cart", "refused", "down")
    first = world.pay("stan", key="k1")
    retry = world.pay("stan", key="k1")
    assert len(world.deps.gateway.charged) == 1
    assert first.status == 200, first.body
    assert retry.status == 200 and retry.body == first.body, retry.body


class RealChargeDeps(FakeDeps):
    """The real Deps.charge (its latency metric in `finally`), the HTTP call faked: the
    gateway answers 200 (the money moved)."""

    def __init__(self) -> None:
        super().__init__()
        self.real = Deps(Settings(gateway_url="http://gateway.invalid/charge"))

        def _charge(request_id: str) -> int:
            self.gateway.calls.append(request_id)
            self.gateway.charged.append(request_id)
            return 200

        self.real._charge = _charge  # type: ignore[method-assign]

    def charge(self, request_id: str) -> None:
        self.real.charge(request_id)


def test_latency_metric_failing_turns_a_taken_charge_into_unknown(monkeypatch) -> None:
    """deps.py Deps.charge: `self._observe(...)` in `finally` is unguarded. The gateway
    answered 200, the metric raises, the service sees a non-DependencyError and records the
    payment `unknown` (504): the order is never published without an operator."""
    world = World(deps=RealChargeDeps())
    monkeypatch.setattr(metrics.DEP_LATENCY, "labels", boom)
    reply = world.pay("stan", key="k1")
    world.drain()
    assert world.deps.gateway.charged == [reply.rid]
    [record] = world.service.records.list(("pending", "charged", "delivered", "unknown"))
    assert record.state in (CHARGED, DELIVERED), (reply.status, record.state, record.note)
    assert [mid for mid, _ in world.broker.queue] == [record.orderid]


# -- 2. group commit: a BaseException in the committing thread -------------------------------
def test_group_commit_leader_interrupted_leaves_a_follower_charged_without_a_record(
    monkeypatch,
) -> None:
    """records.py Records.create: the thread that commits a batch sets `done`/`error` on its
    entries only for an Exception. On a BaseException (KeyboardInterrupt, SystemExit) the
    other threads of the batch find their entry not done, commit the (now empty) queue and
    return as if their `pending` row were durable: they charge with no record at all; with
    the broker down the order then exists nowhere (503, nothing for ops)."""
    world = World()
    world.broker.mode = "down"
    records = world.service.records
    original = records._insert
    calls = {"n": 0}

    def insert(rows: list[tuple]) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise KeyboardInterrupt  # the committing thread is interrupted
        original(rows)

    monkeypatch.setattr(records, "_insert", insert)
    replies: dict[str, Any] = {}

    def client(user: str, rid: str) -> None:
        try:
            reply = world.app.test_client().post(
                f"/pay/{user}",
                data=json.dumps(CART),
                content_type="application/json",
                headers={"X-Request-ID": rid},
            )
            replies[rid] = reply.status_code
        except BaseException as exc:  # the interrupted one
            replies[rid] = type(exc).__name__

    records._write_lock.acquire()  # both rows queue up behind one commit
    threads = [threading.Thread(target=client, args=(f"anonymous-{i}", f"gc-{i}")) for i in (1, 2)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 5
    while len(records._queue) < 2 and time.monotonic() < deadline:
        time.sleep(0.005)
    records._write_lock.release()
    for t in threads:
        t.join(10)
    assert len(world.deps.gateway.charged) <= 1, replies
    for rid in world.deps.gateway.charged:  # every charge has its durable record
        assert rid in world.records(), f"{rid} charged without a payment record: {replies}"


# -- 3. a late confirm racing the `charged` write --------------------------------------------
class LatePublisher(FakePublisher):
    """The broker stores the message and its confirm comes just after the request's
    PAYMENT_PUBLISH_TIMEOUT: the ticket was sent, then abandoned by its waiter."""

    def __init__(self, world: World) -> None:
        super().__init__(world.broker)
        self.world = world
        self.late: list[tuple[str, dict[str, Any]]] = []

    def publish(self, orderid: str, body: bytes, headers: dict[str, str]) -> Ticket:
        if self.world.broker.mode != "late":
            return super().publish(orderid, body, headers)
        ticket = Ticket(orderid)
        ticket.mark_sent()
        self.late.append((orderid, json.loads(body)))
        return ticket


def test_late_confirm_just_before_the_charged_write_is_lost(monkeypatch) -> None:
    """service.py _after_charge / Service._late_confirm: the waiter gives up (ABANDONED,
    sent: hold 30 s); the broker's ack arrives before `records.charged` commits, so
    `records.delivered` (charged -> delivered only) finds the record still `pending` and
    does nothing; the record is then committed `charged` and the drainer publishes the order
    again: a duplicate without any broker crash."""
    world = World()
    publisher = LatePublisher(world)
    world.service.publisher = publisher
    world.broker.mode = "late"
    records = world.service.records
    charged = records.charged

    def ack_arrives_then_charged(orderid: str, hold: float) -> bool:
        for mid, message in publisher.late:  # the I/O thread: the message is queued, acked
            world.broker.queue.append((mid, message))
            world.service._late_confirm(mid)  # what Publisher._on_confirm calls when late
        publisher.late.clear()
        return charged(orderid, hold)

    monkeypatch.setattr(records, "charged", ack_arrives_then_charged)
    reply = world.pay("stan", key="k1")
    assert reply.status == 200, reply.body
    world.broker.mode = "up"
    world.drain()  # once the 30 s hold has run out
    check(world, settled=True)
    ids = [mid for mid, _ in world.broker.queue]
    assert ids == [reply.body["orderid"]], f"published {len(ids)} times without a crash"


# -- 4. a huge integer amount is a 400, before any claim or charge --------------------------------
def test_huge_integer_total_is_a_400_not_a_500() -> None:
    """validation.py _number: math.isfinite(10**400) raises OverflowError, which is not
    Invalid: the request gets the 500 handler (before any claim or charge)."""
    world = World()
    body = copy.deepcopy(CART)
    body["total"] = 10**400
    reply = world.pay("anonymous-1", cart=body)
    assert world.deps.gateway.calls == []
    assert reply.status == 400, reply.status
