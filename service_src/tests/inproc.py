"""The real Flask app and Service in this process, with the network faked: a gateway that
counts charges, User and Cart that record calls, and a broker whose confirms can be lost.

Faults are injected per step; `Ledger.check` asserts the money invariant:
- every charge the gateway took ends as one order in the queue (or, when the service could
  not learn or record its outcome, an `unknown`/`pending` record kept for ops) — never lost;
- duplicates in the queue only carry the same message_id (at-least-once);
- no (user, Idempotency-Key) is charged twice;
- no refused request (4xx, or 503/502 before the charge) is charged.
"""

from __future__ import annotations

import json
import socket
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from conftest import CART
from payment.amqp import CONFIRMED, FAILED, UNCERTAIN, Ticket
from payment.app import create_app
from payment.config import Settings
from payment.deps import DependencyError
from payment.records import CHARGED, DELIVERED, PENDING, UNKNOWN


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No socket may connect anywhere (the broker, a stub, any host): the in-process tier
    needs no network. An attempt raises, and fails the test even where the service catches
    the error (a health probe, a publish)."""
    tried: list[Any] = []

    def refused(self: socket.socket, address: Any, *args: Any) -> Any:
        tried.append(address)
        raise ConnectionRefusedError(f"in-process test: no connection to {address!r}")

    monkeypatch.setattr(socket.socket, "connect", refused)
    monkeypatch.setattr(socket.socket, "connect_ex", refused)
    yield
    assert tried == [], f"an in-process test tried to connect to {tried}"


class Gateway:
    """What the gateway does with the next charges: ok, decline, refuse, timeout, or
    server_error (charged, then a 500: the worst case of a 5xx)."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.charged: list[str] = []  # request ids the gateway took money for
        self.calls: list[str] = []


class FakeDeps:
    def __init__(self) -> None:
        self.gateway = Gateway()
        self.user_down = False
        self.history: list[bytes] = []
        self.deleted: list[str] = []
        self.cart_fault: BaseException | None = None

    def user_registered(self, user_id: str, request_id: str) -> bool:
        if self.user_down:
            raise DependencyError("user", "refused", "down")
        return not user_id.startswith("anonymous")

    def start_user_check(self, user_id: str, request_id: str) -> Callable[[], bool]:
        return lambda: self.user_registered(user_id, request_id)

    def charge(self, request_id: str) -> None:
        mode = self.gateway.mode
        self.gateway.calls.append(request_id)
        if mode == "refuse":
            raise DependencyError("gateway", "refused", "ConnectionRefusedError")
        if mode == "decline":
            raise DependencyError("gateway", "status", "HTTP 402", 402)
        self.gateway.charged.append(request_id)  # the money moved
        if mode == "timeout":
            raise DependencyError("gateway", "read_timeout", "ReadTimeoutError")
        if mode == "server_error":
            raise DependencyError("gateway", "status", "HTTP 500", 500)

    def add_history(self, user_id: str, body: bytes, request_id: str) -> int:
        self.history.append(body)
        return 200

    def start_history(self, user_id: str, body: bytes, request_id: str) -> Callable[[], int]:
        return lambda: self.add_history(user_id, body, request_id)

    def start_delete_cart(self, user_id: str, request_id: str) -> Callable[[], int]:
        return lambda: self.delete_cart(user_id, request_id)

    def delete_cart(self, user_id: str, request_id: str) -> int:
        if self.cart_fault is not None:
            raise self.cart_fault
        self.deleted.append(user_id)
        return 200

    def probe(self, dependency: str) -> bool:
        return True


class FakeBroker:
    """Modes: up (confirm), down (not connected), lose_confirm (stored, confirm lost),
    drop (sent, neither stored nor confirmed: the connection died first)."""

    def __init__(self) -> None:
        self.mode = "up"
        self.queue: list[tuple[str, dict[str, Any]]] = []  # (message_id, body)

    def publish(self, orderid: str, body: bytes, headers: dict[str, str]) -> Ticket:
        ticket = Ticket(orderid)
        if self.mode == "down":
            ticket.resolve(FAILED)
            return ticket
        ticket.mark_sent()
        message = json.loads(body)  # strict JSON or the consumer could not read it
        assert message["orderid"] == orderid
        if self.mode in ("up", "lose_confirm"):
            self.queue.append((orderid, message))
        ticket.resolve(CONFIRMED if self.mode == "up" else UNCERTAIN)
        return ticket


class FakePublisher:
    def __init__(self, broker: FakeBroker, *args: Any, **kwargs: Any) -> None:
        self.broker = broker
        self.last_error = ""
        self.host = "fake-broker"

    @property
    def connected(self) -> bool:
        return self.broker.mode != "down"

    def publish(self, orderid: str, body: bytes, headers: dict[str, str]) -> Ticket:
        return self.broker.publish(orderid, body, headers)

    def start(self) -> None:
        pass


@dataclass
class Sent:
    rid: str
    user: str
    key: str | None
    status: int
    body: dict[str, Any]


@dataclass
class World:
    """One app over one state dir, its fakes, and every request sent."""

    deps: FakeDeps = field(default_factory=FakeDeps)
    broker: FakeBroker = field(default_factory=FakeBroker)
    sent: list[Sent] = field(default_factory=list)
    state_dir: str = field(default_factory=lambda: tempfile.mkdtemp(prefix="payment-inproc-"))
    seq: int = 0
    settings: dict[str, Any] = field(default_factory=dict)  # overrides, e.g. the backend
    name: str = "req"  # request ids are <name>-<n> (unique across Worlds that share fakes)

    def __post_init__(self) -> None:
        defaults: dict[str, Any] = {
            "state_dir": self.state_dir,
            "publish_timeout": 0.01,
            "gateway_timeout": 0.05,
            "connect_timeout": 0.05,
            "read_timeout": 0.05,  # the fakes never wait; keeps pending_age short
            "health_cache": 0.0,
            "idempotency_lease": 60,
        }
        settings = Settings(**{**defaults, **self.settings})
        self.app = create_app(
            settings,
            deps=self.deps,
            publisher_factory=lambda *a, **k: FakePublisher(self.broker),
            start_threads=False,
        )
        self.service = self.app.extensions["payment"]
        self.client = self.app.test_client()
        self.service.ensure_started()

    def pay(self, user: str = "anonymous-1", key: str | None = None, cart: Any = None) -> Sent:
        self.seq += 1
        rid = f"{self.name}-{self.seq}"
        headers = {"X-Request-ID": rid}
        if key is not None:
            headers["Idempotency-Key"] = key
        reply = self.client.post(
            f"/pay/{user}",
            data=json.dumps(CART if cart is None else cart),
            content_type="application/json",
            headers=headers,
        )
        sent = Sent(rid, user, key, reply.status_code, reply.get_json())
        sent.headers = dict(reply.headers)  # type: ignore[attr-defined]
        self.sent.append(sent)
        return sent

    def drain(self) -> None:
        """The drainer's work once every hold has run out: sweep stale pending records,
        publish charged ones."""
        self.service.records._db().execute("UPDATE payments SET claimed_until = 0")
        self.service.drainer.sweep(force=True)
        while self.service.drainer.drain_once():
            pass

    def records(self) -> dict[str, Any]:
        records = self.service.records
        every = records.list(("pending", "charged", "delivered", "declined", "failed", "unknown"))
        return {r.request_id: r for r in every}


def check(world: World, settled: bool) -> None:
    """The money invariant. settled: the broker has been up and the drainer has run since
    the last fault, so every durable order must be in the queue by now."""
    records = world.records()
    charged = world.deps.gateway.charged
    by_rid = {s.rid: s for s in world.sent}
    queue_ids = Counter(mid for mid, _ in world.broker.queue)
    # duplicates only with the same message_id: the body under one message_id never differs
    bodies: dict[str, Any] = {}
    for mid, body in world.broker.queue:
        assert body["orderid"] == mid
        assert bodies.setdefault(mid, body) == body
    # no refused request charged
    for s in world.sent:
        refused = s.status in (400, 404, 405, 409, 413, 415, 422, 502) or (
            s.status == 503 and s.body.get("dependency") in ("user", "gateway", "idempotency")
        )
        if refused:
            assert s.rid not in charged, f"refused request {s.rid} ({s.status}) was charged"
    # no key charged twice
    keys = Counter((by_rid[rid].user, by_rid[rid].key) for rid in charged if by_rid[rid].key)
    assert all(n == 1 for n in keys.values()), f"a key charged twice: {keys}"
    # every charge: one durable record, never declined, and its order delivered when settled
    for rid in charged:
        record = records.get(rid)
        assert record is not None, f"charge {rid} has no record"
        assert record.state in (PENDING, CHARGED, DELIVERED, UNKNOWN), record.state
        if record.state in (CHARGED, DELIVERED) and settled:
            assert queue_ids[record.orderid] >= 1, f"order {record.orderid} lost"
            assert record.state == DELIVERED
        reply = by_rid[rid]
        if reply.status == 200:
            assert reply.body["orderid"] == record.orderid
            assert record.state in (CHARGED, DELIVERED)
        else:  # a charge answered otherwise is kept for ops, never silently dropped
            assert reply.status in (503, 504), reply
            assert record.state in (PENDING, UNKNOWN) or reply.status == 503
    # every order in the queue comes from a charge
    charged_orders = {records[rid].orderid for rid in charged if rid in records}
    assert set(queue_ids) <= charged_orders
    # a key's successful answers all name one order
    orders: dict[tuple[str, str], set[str]] = {}
    for s in world.sent:
        if s.key is not None and s.status == 200:
            orders.setdefault((s.user, s.key), set()).add(s.body["orderid"])
    assert all(len(ids) == 1 for ids in orders.values()), orders
    # no 500, ever
    assert all(s.status != 500 for s in world.sent)
