"""Slow and idle clients do not hold up a normal one (payment.ini as shipped, no load balancer
in front): 48 connections trickling a request's headers one byte a second (slowloris) and 48
keep-alive connections left idle after one request, all kept open (one the server closes is
opened again at once), while a normal client pays and asks /health. Both ways uWSGI gets
its socket: binding it itself, and inheriting it from systemd (socket activation, emulated:
fd 3 with LISTEN_FDS/LISTEN_PID, as payment.socket hands it over).

With the HTTP parsed by the workers themselves (`http11-socket`, before the HTTP router) the
first slow connections took every worker thread and kept it: the normal client got no answer
in 60 s (service_src/README.md, "Slow clients")."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Iterator
from http.client import HTTPConnection
from typing import TypeVar

import pytest
from conftest import CART, Payment, Stubs, delete_topology, make_payment, request
from slowload import SlowLoad  # testing/ (on the path: conftest)

SLOWLORIS = 48
IDLE = 48
# "A few seconds", generous for a loaded 2-core machine: unhindered, these answers take
# milliseconds (and the workers-parse-HTTP setup never answered at all).
BOUND = 5.0

T = TypeVar("T")


@pytest.fixture(scope="module", params=["bound", "socket-activated"])
def service(request: pytest.FixtureRequest, rabbitmq: None, stubs: Stubs) -> Iterator[Payment]:
    """2 workers x 4 threads (the tests' default): 8 threads for 96 slow connections."""
    payment = make_payment(stubs)
    if request.param == "socket-activated":
        payment.activate()
    payment.start()
    yield payment
    payment.stop()
    if payment.listener is not None:
        payment.listener.close()
    delete_topology(payment.exchange, payment.queue)
    shutil.rmtree(payment.state_dir, ignore_errors=True)


@pytest.fixture
def slow_load(service: Payment, fresh_stubs: Stubs) -> Iterator[SlowLoad]:
    service.messages()  # an empty queue for each test
    with SlowLoad(service.port, slowloris=SLOWLORIS, idle=IDLE) as load:
        time.sleep(3)  # every connection open, the slowloris ones a few bytes in
        yield load


def assert_held_all_along(load: SlowLoad) -> None:
    """The slow and idle connections were really there: every one still open (none closed by
    the server, none refused), the slowloris ones fed a byte a second, the idle ones
    answered once."""
    assert load.open_count() == {"slowloris": SLOWLORIS, "idle": IDLE}
    assert not any(load.closed.values()), load.closed
    assert load.answered == IDLE
    assert load.bytes_sent >= SLOWLORIS * 3


def timed(call: Callable[[], T]) -> tuple[T, float]:
    t0 = time.monotonic()
    reply = call()
    return reply, time.monotonic() - t0


def test_a_payment_is_not_delayed_by_slow_and_idle_clients(
    service: Payment, slow_load: SlowLoad
) -> None:
    # a payment on a connection of its own, as RoboShop's callers do ...
    reply, paid_in = timed(lambda: service.pay("anonymous-slowtest", timeout=3 * BOUND))
    assert reply.status == 200, reply.raw
    # ... and a readiness probe
    health, health_in = timed(lambda: request(service.port, "GET", "/health", timeout=3 * BOUND))
    assert health.status == 200, health.raw
    assert health.json["rabbitmq"] == "connected"
    assert paid_in <= BOUND, f"the payment took {paid_in:.1f} s"
    assert health_in <= BOUND, f"/health took {health_in:.1f} s"
    assert [m["orderid"] for _, m in service.messages()] == [reply.json["orderid"]]
    assert_held_all_along(slow_load)


def test_a_keepalive_client_is_served_among_slow_clients(
    service: Payment, slow_load: SlowLoad
) -> None:
    """A normal keep-alive client: three payments on one connection, each answered."""
    conn = HTTPConnection("127.0.0.1", service.port, timeout=3 * BOUND)
    try:
        local = set()
        for i in range(3):
            t0 = time.monotonic()
            conn.request(
                "POST",
                f"/pay/anonymous-ka-{i}",
                body=json.dumps(CART),
                headers={"Content-Type": "application/json"},
            )
            resp = conn.getresponse()
            body = resp.read()
            assert resp.status == 200, body
            assert time.monotonic() - t0 <= BOUND
            assert conn.sock is not None
            local.add(conn.sock.getsockname())
        assert len(local) == 1, "the connection was not kept alive"
    finally:
        conn.close()
    assert len(service.messages()) == 3
    assert_held_all_along(slow_load)
