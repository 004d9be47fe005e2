"""Idempotency-Key: one charge and one message per key, across workers and concurrent calls."""

from __future__ import annotations

import copy
import shutil
import threading
import uuid
from collections.abc import Iterator

import pytest
from conftest import (
    CART,
    Payment,
    RedisServer,
    Reply,
    Stubs,
    delete_topology,
    make_payment,
)


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    """A real redis-server (Debian's package) on a free loopback port, for this module."""
    server = RedisServer()
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="module", params=["sqlite", "redis"])
def payment_module(
    request: pytest.FixtureRequest, rabbitmq: None, stubs: Stubs
) -> Iterator[Payment]:
    """Every test here runs against both idempotency backends (overrides conftest's)."""
    overrides = {"PAYMENT_IDEMPOTENCY_BACKEND": request.param}
    if request.param == "redis":
        overrides["PAYMENT_REDIS_URL"] = request.getfixturevalue("redis_url")
    payment = make_payment(stubs, **overrides)
    payment.start()
    yield payment
    payment.stop()
    delete_topology(payment.exchange, payment.queue)
    shutil.rmtree(payment.state_dir, ignore_errors=True)


def test_backend_in_use_is_reported(payment: Payment) -> None:
    backend = payment.env["PAYMENT_IDEMPOTENCY_BACKEND"]
    health = payment.get("/health").json
    assert health["idempotency"] == {"backend": backend, "state": "connected"}


def key() -> dict[str, str]:
    return {"Idempotency-Key": f"k-{uuid.uuid4().hex}"}


def test_same_key_same_body_replays_the_response(payment: Payment, fresh_stubs: Stubs) -> None:
    headers = key()
    first = payment.pay("stan", headers=headers)
    assert first.status == 200, first.raw
    replies = [payment.pay("stan", headers=headers) for _ in range(5)]  # both workers
    assert {r.status for r in replies} == {200}
    assert {r.json["orderid"] for r in replies} == {first.json["orderid"]}
    assert all(r.headers.get("idempotent-replayed") == "true" for r in replies)
    assert len(fresh_stubs.gateway.calls()) == 1
    assert len(fresh_stubs.cart.calls()) == 1
    messages = payment.messages()
    assert [body["orderid"] for _, body in messages] == [first.json["orderid"]]


def test_same_key_other_body_is_422(payment: Payment, fresh_stubs: Stubs) -> None:
    headers = key()
    assert payment.pay("stan", headers=headers).status == 200
    other = copy.deepcopy(CART)
    other["items"][0]["qty"] = 2
    reply = payment.pay("stan", other, headers=headers)
    assert reply.status == 422
    assert reply.json["status"] == "error"
    assert len(fresh_stubs.gateway.calls()) == 1
    assert len(payment.messages()) == 1


def test_keys_are_scoped_per_user(payment: Payment, fresh_stubs: Stubs) -> None:
    # one user's key cannot replay (or block) another user's payment
    headers = key()
    first = payment.pay("stan", headers=headers)
    other = payment.pay("anonymous-9", headers=headers)
    assert first.status == other.status == 200
    assert first.json["orderid"] != other.json["orderid"]
    assert "idempotent-replayed" not in other.headers
    assert len(fresh_stubs.gateway.calls()) == 2


def test_equal_numbers_are_the_same_request(payment: Payment, fresh_stubs: Stubs) -> None:
    headers = key()
    first = payment.pay("stan", headers=headers)
    again = copy.deepcopy(CART)
    again["items"][0]["price"] = 1000.0  # 1000 == 1000.0
    again["total"] = 1131
    retry = payment.pay("stan", again, headers=headers)
    assert retry.status == 200, retry.raw
    assert retry.json["orderid"] == first.json["orderid"]
    assert len(fresh_stubs.gateway.calls()) == 1


def test_different_keys_are_different_orders(payment: Payment) -> None:
    a = payment.pay("stan", headers=key())
    b = payment.pay("stan", headers=key())
    assert a.status == b.status == 200
    assert a.json["orderid"] != b.json["orderid"]
    assert len(payment.messages()) == 2


def test_concurrent_requests_with_one_key(payment: Payment, fresh_stubs: Stubs) -> None:
    fresh_stubs.gateway.mode("slow", delay_ms=400)  # keep the first one in flight
    headers = key()
    replies: list[Reply] = []
    lock = threading.Lock()
    barrier = threading.Barrier(8)

    def client() -> None:
        barrier.wait()
        reply = payment.pay("stan", headers=headers)
        with lock:
            replies.append(reply)

    threads = [threading.Thread(target=client) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    statuses = sorted(r.status for r in replies)
    assert len(replies) == 8
    assert set(statuses) <= {200, 409}, statuses
    assert statuses.count(409) >= 1
    ok = [r for r in replies if r.status == 200]
    assert len({r.json["orderid"] for r in ok}) == 1
    for r in replies:
        if r.status == 409:
            assert r.json["status"] == "error"
            assert int(r.headers["retry-after"]) >= 1
    assert len(fresh_stubs.gateway.calls()) == 1
    fresh_stubs.gateway.mode("ok")
    # after completion the key replays the one order
    again = payment.pay("stan", headers=headers)
    assert again.status == 200
    assert again.json["orderid"] == ok[0].json["orderid"]
    assert len(payment.messages()) == 1


def test_failure_before_the_charge_releases_the_key(payment: Payment, fresh_stubs: Stubs) -> None:
    headers = key()
    fresh_stubs.user.mode("fail", status=500)
    assert payment.pay("stan", headers=headers).status == 503
    fresh_stubs.user.mode("ok")
    retry = payment.pay("stan", headers=headers)
    assert retry.status == 200, retry.raw
    assert len(fresh_stubs.gateway.calls()) == 1
    assert len(payment.messages()) == 1


def test_unknown_charge_state_is_kept_for_the_key(payment: Payment, fresh_stubs: Stubs) -> None:
    headers = key()
    fresh_stubs.gateway.mode("hang")
    assert payment.pay("stan", headers=headers).status == 504
    fresh_stubs.gateway.mode("ok")
    assert payment.pay("stan", headers=headers).status == 504  # no second charge attempt
    assert len(fresh_stubs.gateway.calls()) == 1
    assert payment.messages() == []


def test_invalid_key_is_400(payment: Payment, fresh_stubs: Stubs) -> None:
    reply = payment.pay("stan", headers={"Idempotency-Key": "x" * 300})
    assert reply.status == 400
    assert fresh_stubs.gateway.calls() == []
