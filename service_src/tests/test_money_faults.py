"""Faults an outside review found (2026-12-02), in process, the network faked as in
test_money.py; each test failed on the code before its fix:
- a metric failing after the charge (the payments counter, an error counter's labels(), the
  gateway call's latency): never a 500, never a taken charge turned `unknown`;
- the thread committing a group of `pending` rows interrupted (a BaseException): no other
  thread of the group charges without its row;
- the broker's late confirm arriving before the `charged` write: delivered, not published
  again;
- an integer beyond float range: a 400, not a 500;
- the drainer holding its batch longer than its lease (one confirm wait per row, in turn):
  another worker's drainer published the same orders again while they were in flight;
- `payment.ops republish --confirmed-charged` making the record claimable before its own
  publish: the drainer published the same order at the same time.
Duplicates are allowed only after a broker crash (the same message_id); these came without."""

from __future__ import annotations

import copy
import json
import threading
import time
from typing import Any

import pytest
from conftest import CART
from inproc import FakeDeps, FakePublisher, World, check, offline  # noqa: F401 (fixture)
from payment import metrics, ops
from payment.amqp import Ticket
from payment.config import Settings
from payment.deps import DependencyError, Deps
from payment.drainer import Drainer
from payment.records import CHARGED, DELIVERED, UNKNOWN, Record, Records

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


# -- 5. duplicates without a broker crash (a second review) ----------------------------------
def charged_orders(world: World, n: int) -> list[str]:
    """n paid orders left `charged` (broker down at the request: hold 0)."""
    world.broker.mode = "down"
    ids = [world.pay("stan").body["orderid"] for _ in range(n)]
    world.broker.mode = "up"
    assert [world.service.records.get(i).state for i in ids] == [CHARGED] * n
    return ids


# -- 1. the drainer's lease is shorter than the time it holds its batch ------------------------
def test_drainer_lease_runs_out_while_its_publishes_are_unconfirmed() -> None:
    """drainer.py drain_once: claim(batch, lease) then `ticket.wait(confirm_timeout)` for each
    row in turn. Confirms that do not come (broker stalled: disk, quorum lost, flow control)
    keep the batch for rows x confirm_timeout: with the defaults 200 x 3 s = 600 s against
    DRAIN_LEASE = 60 s (21 stalled rows are enough). Once the lease has run out another
    worker's drainer claims the same `charged` rows and publishes them again while the first
    copies are still in flight (and the first drainer's release() then overwrites the second
    one's lease): duplicates without any broker crash, the lease protects nothing.
    Here the same ratio, scaled: lease 0.3 s, confirm timeout 0.2 s, 3 rows."""
    world = World()
    ids = charged_orders(world, 3)
    first: list[Ticket] = []

    def stalled(record: Record) -> Ticket:  # sent; the broker has not confirmed (yet)
        ticket = Ticket(record.orderid)
        ticket.mark_sent()
        first.append(ticket)
        return ticket

    def drainer(records: Records, submit: Any) -> Drainer:
        return Drainer(
            records, submit, connected=lambda: True, poll=0.05, lease=0.3,
            confirm_timeout=0.2, late_window=30.0, pending_age=60.0, retention=86400.0,
        )  # fmt: skip

    worker1 = drainer(world.service.records, stalled)
    busy = threading.Thread(target=worker1.drain_once)
    busy.start()
    deadline = time.monotonic() + 5
    while len(first) < 3 and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(0.35)  # past the lease, while worker 1 still waits for its confirms

    again: list[str] = []

    def record_submit(record: Record) -> Ticket:
        outstanding = {t.orderid for t in first if busy.is_alive()}
        if record.orderid in outstanding:
            again.append(record.orderid)
        ticket = Ticket(record.orderid)
        ticket.mark_sent()
        return ticket

    worker2 = drainer(Records(world.state_dir), record_submit)  # another uWSGI worker
    worker2.drain_once()
    busy.join(5)
    assert sorted({t.orderid for t in first}) == sorted(ids)
    assert again == [], f"published again while the first publish was in flight: {again}"


# -- 2. ops republish of an unknown payment races the drainer ----------------------------------
def test_ops_republish_confirmed_charged_is_also_published_by_the_drainer(monkeypatch) -> None:
    """ops.py main: `records.requeue` (unknown -> charged, claimed_until = 0) commits before
    `publish_once` connects (BlockingConnection over every AMQP_HOST in turn, socket timeout
    10 s each), declares, publishes and waits for the confirm. The service's drainer polls
    every PAYMENT_OUTBOX_POLL (1 s) and finds the record due at once: it publishes the same
    order while ops does, two copies in the queue without any broker crash."""
    world = World()
    world.deps.gateway.mode = "timeout"  # charged, the answer lost: unknown
    reply = world.pay("stan", key="k1")
    world.deps.gateway.mode = "ok"
    assert reply.status == 504
    orderid = reply.body.get("orderid") or world.records()[reply.rid].orderid
    assert world.service.records.get(orderid).state == UNKNOWN

    def publish_once(settings: Settings, record: Record, timeout: float = 10.0) -> bool:
        # while ops connects and waits for the confirm, the drainer's poll comes round
        world.service.drainer.drain_once()
        world.broker.queue.append((record.orderid, {"orderid": record.orderid}))  # ops' copy
        return True

    monkeypatch.setattr(ops, "publish_once", publish_once)
    settings = Settings(state_dir=world.state_dir, amqp_pass="secret")
    assert ops.main(["republish", orderid, "--confirmed-charged"], settings) == 0
    copies = [mid for mid, _ in world.broker.queue]
    assert copies == [orderid], f"published {len(copies)} times without a broker crash"
