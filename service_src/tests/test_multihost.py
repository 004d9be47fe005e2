"""Many payment hosts sharing one Redis for Idempotency-Keys: a key is never charged twice.

Each host is the real app and Service in this process (`inproc.World`) with its own state dir
(its own payment records); the hosts share a real redis-server and one fake gateway that
counts the charges.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from conftest import RedisServer
from inproc import FakeDeps, Gateway, Sent, World
from payment.idempotency import (
    CHARGING,
    IN_FLIGHT,
    MISMATCH,
    PROCEED,
    REPLAY,
    SQLiteStore,
)
from payment.records import FAILED
from payment.redisstore import RedisStore

LEASE = 1  # s: the claim's lease, short so the tests can outlive it


class HostDeps(FakeDeps):
    """FakeDeps with hooks: something happens during the user check (before the charge),
    and a charge that takes a while."""

    def __init__(self, gateway: Gateway) -> None:
        super().__init__()
        self.gateway = gateway
        self.during_user_check: Callable[[], None] | None = None
        self.charge_seconds = 0.0

    def user_registered(self, user_id: str, request_id: str) -> bool:
        hook, self.during_user_check = self.during_user_check, None
        if hook is not None:
            hook()
        return super().user_registered(user_id, request_id)

    def charge(self, request_id: str) -> None:
        time.sleep(self.charge_seconds)
        super().charge(request_id)


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    yield server
    server.stop()


def host(name: str, gateway: Gateway, redis: RedisServer) -> World:
    settings: dict[str, Any] = {
        "idempotency_backend": "redis",
        "redis_url": redis.url,
        "idempotency_lease": LEASE,
    }
    return World(deps=HostDeps(gateway), settings=settings, name=name)


def two_hosts(redis: RedisServer) -> tuple[World, World, Gateway]:
    gateway = Gateway()
    return host("a", gateway, redis), host("b", gateway, redis), gateway


def lost_finish(*_args: Any) -> None:
    raise ConnectionError("host died before storing the answer")


def test_host_died_after_the_charge_other_host_never_charges_again(
    redis: RedisServer,
) -> None:
    a, b, gateway = two_hosts(redis)
    a.service.idempotency.finish = lost_finish  # type: ignore[method-assign]
    first = a.pay("stan", key="k1")
    started = time.monotonic()
    assert first.status == 200, first.body
    assert len(gateway.charged) == 1
    time.sleep(LEASE + 0.3)  # the claim's lease is over
    retry = b.pay("stan", key="k1")
    assert retry.status == 409, retry.body  # the charge may still be running
    assert int(retry.headers["Retry-After"]) >= 1
    # once the charge has surely ended: final 504, the charge state is unknown to host B
    time.sleep(max(0.0, a.service.settings.charge_age - (time.monotonic() - started)) + 0.3)
    late = b.pay("stan", key="k1")
    assert late.status == 504, late.body
    assert "unknown" in late.body["message"]
    assert b.pay("stan", key="k1").status == 504
    # host A's own record still answers with the order
    again = a.pay("stan", key="k1")
    assert again.status == 200 and again.body == first.body
    assert len(gateway.charged) == 1
    assert gateway.calls == [first.rid]


def test_claim_taken_over_before_the_charge_is_not_charged(redis: RedisServer) -> None:
    a, b, gateway = two_hosts(redis)
    taken: list[Sent] = []

    def slow_then_taken_over() -> None:  # host A stalls; its claim runs out; B takes the key
        time.sleep(LEASE + 0.3)
        taken.append(b.pay("stan", key="k1"))

    a.deps.during_user_check = slow_then_taken_over  # type: ignore[attr-defined]
    first = a.pay("stan", key="k1")
    assert taken[0].status == 200, taken[0].body
    assert first.status == 409, first.body  # the key is not ours any more: nothing charged
    assert gateway.charged == [taken[0].rid]
    [record] = a.service.records.list((FAILED,))  # settled: nothing charged on host A
    assert record.request_id == first.rid
    retry = a.pay("stan", key="k1")  # the key answers with B's order
    assert retry.status == 200 and retry.body == taken[0].body
    assert len(gateway.charged) == 1
    assert len(a.broker.queue) == 0 and len(b.broker.queue) == 1


def test_redis_down_is_503_and_never_charged_then_payments_resume(redis: RedisServer) -> None:
    a = host("a", Gateway(), redis)
    gateway = a.deps.gateway
    redis.stop()  # down before the claim
    down = a.pay("stan", key="k1")
    assert (down.status, down.body.get("dependency")) == (503, "idempotency"), down.body
    redis.start()
    # down between the claim and the charge: the charging mark cannot be written
    a.deps.during_user_check = redis.stop  # type: ignore[attr-defined]
    lost = a.pay("stan", key="k2")
    assert (lost.status, lost.body.get("dependency")) == (503, "idempotency"), lost.body
    assert gateway.calls == []
    [record] = a.service.records.list((FAILED,))
    assert record.request_id == lost.rid
    redis.start()  # back on the same port (empty: it kept nothing)
    ok = a.pay("stan", key="k2")
    assert ok.status == 200, ok.body
    assert a.pay("stan", key="k1").status == 200
    assert len(gateway.charged) == 2
    assert len(a.broker.queue) == 2


def test_one_key_on_two_hosts_at_once_is_one_charge(redis: RedisServer) -> None:
    a, b, gateway = two_hosts(redis)
    for world in (a, b):
        world.deps.charge_seconds = LEASE + 0.5  # type: ignore[attr-defined]
    finals: dict[str, Sent] = {}
    barrier = threading.Barrier(2)

    def client(world: World) -> None:  # a client (or load balancer) retrying on 409
        barrier.wait()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            reply = world.pay("stan", key="k1")
            if reply.status != 409:
                finals[world.name] = reply
                return
            time.sleep(0.1)

    threads = [threading.Thread(target=client, args=(w,)) for w in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert {r.status for r in finals.values()} == {200}, finals
    assert len({r.body["orderid"] for r in finals.values()}) == 1
    assert len(gateway.charged) == 1
    assert len(a.broker.queue) + len(b.broker.queue) == 1


def test_a_stale_claim_never_touches_the_new_owner_or_the_charging_mark(
    redis: RedisServer,
) -> None:
    store = RedisStore(redis.url, ttl=60, lease=LEASE)
    old = store.begin("stan k1", "fp")
    time.sleep(LEASE + 0.3)  # its lease ran out
    new = store.begin("stan k1", "fp")
    assert (old.kind, new.kind) == (PROCEED, PROCEED)
    assert not store.charging("stan k1", old.token, "o-old")  # not ours: no charge
    store.abort("stan k1", old.token)
    store.finish("stan k1", old.token, "fp", 200, '{"orderid":"o-old"}')
    assert store.begin("stan k1", "fp").kind == IN_FLIGHT  # still the new owner's claim
    assert store.charging("stan k1", new.token, "o-new")
    store.abort("stan k1", new.token)  # an abort after the mark does not release the key
    time.sleep(LEASE + 0.3)  # the mark outlives the lease (it is kept for the TTL)
    seen = store.begin("stan k1", "fp")
    assert (seen.kind, seen.orderid) == (CHARGING, "o-new")
    assert seen.host and seen.age >= LEASE
    assert store.begin("stan k1", "other").kind == MISMATCH
    store.finish("stan k1", new.token, "fp", 200, '{"orderid":"o-new"}')
    done = store.begin("stan k1", "fp")
    assert (done.kind, done.body) == (REPLAY, '{"orderid":"o-new"}')


def test_sqlite_stale_claim_does_not_charge_or_overwrite(tmp_path: Any) -> None:
    store = SQLiteStore(str(tmp_path), ttl=60, lease=60)
    old = store.begin("stan k1", "fp")
    store._db().execute("UPDATE idempotency SET expires = 0")  # its lease ran out
    new = store.begin("stan k1", "fp")
    assert not store.charging("stan k1", old.token, "o-old")
    store.abort("stan k1", old.token)
    store.finish("stan k1", old.token, "fp", 200, "{}")
    assert store.begin("stan k1", "fp").kind == IN_FLIGHT
    assert store.charging("stan k1", new.token, "o-new")
