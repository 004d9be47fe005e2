"""A uWSGI worker SIGKILLed in the middle of a payment (real service, real broker): the
charge is never repeated for its Idempotency-Key, the order is never lost, and a charge whose
outcome the dead worker never learned is kept as `unknown` (metrics, /health, payment.ops)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from conftest import SERVICE_SRC, Payment, Reply, Stubs, delete_topology, make_payment


@pytest.fixture
def one_worker(rabbitmq: None, stubs: Stubs, fresh_stubs: Stubs) -> Iterator[Payment]:
    payment = make_payment(
        stubs,
        PAYMENT_PROCESSES="1",
        PAYMENT_GATEWAY_TIMEOUT="2",
        PAYMENT_IDEMPOTENCY_LEASE="2",
    )
    payment.start()
    yield payment
    payment.stop()
    delete_topology(payment.exchange, payment.queue)
    shutil.rmtree(payment.state_dir, ignore_errors=True)


def worker_pids(payment: Payment) -> list[int]:
    """The master's workers (its other child is the HTTP router, "payment uWSGI http 1")."""
    assert payment.proc is not None
    out = subprocess.run(
        ["pgrep", "-P", str(payment.proc.pid), "-f", "uWSGI worker"],
        capture_output=True,
        text=True,
    ).stdout.split()
    return [int(pid) for pid in out]


def worker_pid(payment: Payment) -> int:
    [pid] = worker_pids(payment)
    return pid


def wait_for(what: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not what():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def kill_worker_when(payment: Payment, reached: Callable[[], bool], key: str) -> None:
    """Pay in the background, SIGKILL the worker once the payment reached a step."""
    pid = worker_pid(payment)
    replies: list[Reply | BaseException] = []

    def pay() -> None:
        try:
            replies.append(payment.pay("stan", headers={"Idempotency-Key": key}, timeout=30))
        except OSError as exc:
            replies.append(exc)

    thread = threading.Thread(target=pay)
    thread.start()
    wait_for(reached)
    os.kill(pid, signal.SIGKILL)
    thread.join(30)
    assert replies and not isinstance(replies[0], Reply), replies  # no answer: it died
    # uWSGI respawns the worker: until it has, the master has no child at all
    wait_for(lambda: len(pids := worker_pids(payment)) == 1 and pids[0] != pid)


def ops(payment: Payment, *args: str) -> str:
    return subprocess.run(
        [sys.executable, "-m", "payment.ops", *args],
        cwd=SERVICE_SRC,
        env={**payment.env, "PYTHONPATH": str(SERVICE_SRC)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def test_killed_during_the_charge_is_unknown_and_never_charged_again(
    one_worker: Payment, fresh_stubs: Stubs
) -> None:
    payment = one_worker
    fresh_stubs.gateway.mode("hang")  # the gateway took the request: money may have moved
    kill_worker_when(payment, lambda: len(fresh_stubs.gateway.calls()) == 1, "kill-charge")
    fresh_stubs.gateway.mode("ok")
    time.sleep(2.5)  # the key's claim lease (2 s) has run out
    retry = payment.pay("stan", headers={"Idempotency-Key": "kill-charge"})
    assert retry.status in (409, 504), retry.raw  # pending (young), or already unknown
    # the drainer of the new worker turns the old pending record into unknown
    wait_for(lambda: payment.get("/health").json["payments"]["unknown"] == 1, timeout=30)
    retry = payment.pay("stan", headers={"Idempotency-Key": "kill-charge"})
    assert retry.status == 504, retry.raw
    assert len(fresh_stubs.gateway.calls()) == 1, "charged twice"
    assert payment.messages() == []  # never published blindly
    assert payment.metric("payment_records", 'state="unknown"') == 1
    assert payment.metric("payment_unknown_total", 'cause="worker_ended"') == 1
    [row] = [json.loads(line) for line in ops(payment, "list", "--json").splitlines()]
    assert row["state"] == "unknown" and row["user"] == "stan"
    assert row["idempotency_key"] == "kill-charge"


def test_killed_after_the_charge_before_the_publish_loses_nothing(
    one_worker: Payment, fresh_stubs: Stubs
) -> None:
    payment = one_worker
    subprocess.run(["rabbitmqctl", "-q", "stop_app"], check=True, timeout=120)
    try:
        wait_for(lambda: payment.get("/health").json["rabbitmq"] == "disconnected")
        fresh_stubs.cart.mode("hang")  # the cart delete runs after the charge
        kill_worker_when(
            payment,
            lambda: any(c["method"] == "DELETE" for c in fresh_stubs.cart.calls()),
            "kill-publish",
        )
        fresh_stubs.cart.mode("ok")
        undelivered = payment.get("/health").json["outbox"]["pending"]
        assert undelivered == 1  # charged, on disk, not published
    finally:
        subprocess.run(["rabbitmqctl", "-q", "start_app"], check=True, timeout=120)
    time.sleep(2.5)  # the key's claim lease has run out
    retry = payment.pay("stan", headers={"Idempotency-Key": "kill-publish"})
    assert retry.status == 200, retry.raw  # answered from the durable record
    assert retry.headers.get("idempotent-replayed") == "true"
    assert len(fresh_stubs.gateway.calls()) == 1, "charged twice"
    payment.wait_outbox_empty(timeout=30)
    messages = payment.messages()
    assert {body["orderid"] for _, body in messages} == {retry.json["orderid"]}
    assert all(props.message_id == retry.json["orderid"] for props, _ in messages)
