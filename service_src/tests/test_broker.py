"""RabbitMQ: idle connections survive heartbeats; a broker stopped or killed mid-run and
started again loses no order (durable payment records + reconnect); an order whose confirm
was lost may be queued twice, with the same message_id (at-least-once: service_src/README.md,
delivery contract)."""

from __future__ import annotations

import collections
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator

import pytest
from conftest import (
    Payment,
    Stubs,
    delete_topology,
    make_payment,
    wait_port,
)
from testkit import local_rabbitmq_pid, start_local_rabbitmq


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, timeout=120)


def kill_broker() -> None:
    """SIGKILL the local node: no connection.close, no flush."""
    os.kill(local_rabbitmq_pid(), signal.SIGKILL)


# How the broker goes away: its application stopped (every connection closed properly), or
# the whole node killed with SIGKILL (connections reset, unconfirmed publishes in doubt).
OUTAGES = {
    "stop_app": (lambda: rabbitmqctl("stop_app"), lambda: rabbitmqctl("start_app")),
    "kill": (kill_broker, start_local_rabbitmq),
}


@pytest.fixture(scope="module")
def hb_payment(rabbitmq: None, stubs: Stubs) -> Iterator[Payment]:
    # ready through the outage (orders wait as `charged` records): the test reads /health
    # right after it, while a worker may still be in its reconnect backoff (the default, true,
    # would answer 503 until then)
    payment = make_payment(
        stubs,
        AMQP_HEARTBEAT="2",
        PAYMENT_PROCESSES="2",
        PAYMENT_THREADS="4",
        PAYMENT_HEALTH_REQUIRE_BROKER="false",
    )
    payment.start()
    yield payment
    payment.stop()
    delete_topology(payment.exchange, payment.queue)
    shutil.rmtree(payment.state_dir, ignore_errors=True)


def test_idle_connection_survives_heartbeats(hb_payment: Payment, fresh_stubs: Stubs) -> None:
    hb_payment.messages()
    time.sleep(7)  # more than 3 heartbeat intervals without traffic
    stored = hb_payment.metric("payment_outbox_orders_total", 'event="stored"')
    for i in range(4):
        assert hb_payment.pay(f"anonymous-hb{i}").status == 200
    assert hb_payment.metric("payment_outbox_orders_total", 'event="stored"') == stored
    assert "amqp connection closed" not in hb_payment.log.read_text()
    assert len(hb_payment.messages()) == 4


@pytest.mark.parametrize("outage", sorted(OUTAGES))
def test_broker_restart_loses_nothing_and_duplicates_nothing(
    outage: str, hb_payment: Payment, fresh_stubs: Stubs
) -> None:
    go_down, come_back = OUTAGES[outage]
    hb_payment.messages()
    done: list[str] = []
    failures: list[int] = []
    lock = threading.Lock()
    finished = threading.Event()
    seq = iter(range(10**6))

    def client() -> None:
        while not finished.is_set():
            reply = hb_payment.pay(f"anonymous-r{next(seq)}")
            with lock:
                if reply.status == 200:
                    done.append(reply.json["orderid"])
                else:
                    failures.append(reply.status)
            time.sleep(0.005)

    def wait_done(n: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while len(done) < n and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(done) >= n

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        wait_done(40)
        go_down()
        during = len(done)
        time.sleep(1.0)
        down = hb_payment.get("/health").json
        wait_done(during + 40)  # payments go on while the broker is down
        come_back()
        wait_port(5672, timeout=60)
        wait_done(len(done) + 60)
    finally:
        finished.set()
        start_local_rabbitmq(check=False)  # whatever state the outage left it in
        for t in threads:
            t.join(120)
    assert down["rabbitmq"] == "disconnected"
    assert hb_payment.get("/health").status == 200
    assert failures == []
    hb_payment.wait_outbox_empty(timeout=60)
    assert hb_payment.metric("payment_outbox_orders_total", 'event="stored"') >= 40
    messages = hb_payment.messages()
    assert all(props.message_id == body["orderid"] for props, body in messages)
    counts = collections.Counter(body["orderid"] for _, body in messages)
    ids = collections.Counter(done)
    assert len(ids) == len(done) > 140
    assert set(counts) == set(ids), "every 200 order delivered, nothing else"
    duplicates = {k: v for k, v in counts.items() if v != 1}
    # A broker that goes away after queuing a message but before its confirm reached the
    # service (killed, or its application stopped with publishes in flight) keeps it, and the
    # service cannot tell: it publishes the charged order again (at-least-once, never a loss),
    # with the same message_id (= orderid) for consumers to recognise. Counted, not forbidden.
    # (The delivery ledger that made stop_app exactly-once is gone: it could drop a charged
    # order the queue had lost.)
    print(f"\nbroker {outage}: {len(duplicates)} order(s) queued twice of {len(ids)}")
    assert set(duplicates.values()) <= {2}
