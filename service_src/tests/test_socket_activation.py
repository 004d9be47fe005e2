"""payment.ini under systemd socket activation, emulated as payment.socket does it: the test
holds the listening socket and uWSGI inherits it as fd 3 (LISTEN_FDS=1, LISTEN_PID). The
HTTP router takes it, the workers never see it; a graceful stop (`q` on the master FIFO,
the unit's ExecStop) lets a payment in flight finish through the router; while no uWSGI
runs, a client's connection waits in the socket's queue for the next start; and graceful
restarts under a stream of payments leave no charge unanswered (the router's window during
a stop: service_src/README.md, "Slow clients")."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator

import pytest
from conftest import Payment, Reply, Stubs, delete_topology, make_payment


def socket_activated(stubs: Stubs, **env: str) -> Iterator[Payment]:
    """uWSGI on an inherited listening socket (as under payment.socket), stopped with `q`."""
    payment = make_payment(stubs, **env)
    payment.env["PAYMENT_MASTER_FIFO"] = str(payment.state_dir / "master.fifo")
    payment.activate()
    payment.start()
    yield payment
    payment.stop()
    assert payment.listener is not None
    payment.listener.close()
    delete_topology(payment.exchange, payment.queue)
    shutil.rmtree(payment.state_dir, ignore_errors=True)


@pytest.fixture
def activated(rabbitmq: None, stubs: Stubs, fresh_stubs: Stubs) -> Iterator[Payment]:
    yield from socket_activated(stubs, PAYMENT_DELAY_MS="1500")


def test_the_router_alone_takes_the_inherited_socket(activated: Payment) -> None:
    log = activated.log.read_text()
    assert "- SystemD socket activation detected -" not in log  # LISTEN_* unset for uWSGI
    assert f"uWSGI http bound on 127.0.0.1:{activated.port} fd 3" in log
    # the workers' one socket is the local one (no "attached to INET address ... fd 3")
    assert f"bound to UNIX address {activated.state_dir}/uwsgi.sock" in log
    assert "attached to INET address" not in log
    assert activated.pay("anonymous-act").status == 200


def test_graceful_stop_finishes_the_payment_in_flight_then_the_queue_waits(
    activated: Payment, fresh_stubs: Stubs
) -> None:
    replies: list[Reply | BaseException] = []

    def pay(user: str) -> None:
        try:
            replies.append(activated.pay(user, timeout=60))
        except OSError as exc:
            replies.append(exc)

    # a payment in flight (PAYMENT_DELAY_MS holds it 1.5 s before the charge) ...
    in_flight = threading.Thread(target=pay, args=("anonymous-inflight",))
    in_flight.start()
    deadline = time.monotonic() + 10
    while not fresh_stubs.user.calls():  # the request reached a worker
        assert time.monotonic() < deadline, "the payment never reached the service"
        time.sleep(0.02)
    # ... survives `q`: its worker finishes it and the router passes the answer on
    activated.stop_gracefully()
    in_flight.join(10)
    assert len(replies) == 1 and isinstance(replies[0], Reply), replies
    assert replies[0].status == 200, replies[0].raw

    # nothing runs now: a payment waits in the socket's queue until uWSGI starts again
    waiting = threading.Thread(target=pay, args=("anonymous-queued",))
    waiting.start()
    time.sleep(1)
    assert len(replies) == 1, "answered while no uWSGI ran"
    activated.start()
    waiting.join(30)
    assert len(replies) == 2 and isinstance(replies[1], Reply), replies
    assert replies[1].status == 200, replies[1].raw
    orders = {m["user"] for _, m in activated.messages()}
    assert orders == {"anonymous-inflight", "anonymous-queued"}
    assert len(fresh_stubs.gateway.calls()) == 2


@pytest.fixture
def streamed(rabbitmq: None, stubs: Stubs, fresh_stubs: Stubs) -> Iterator[Payment]:
    """Socket-activated as above, without the payment delay: for a stream of payments."""
    yield from socket_activated(stubs)


def test_graceful_restarts_under_a_payment_stream_charge_only_what_they_answer(
    streamed: Payment, fresh_stubs: Stubs
) -> None:
    """4 clients pay on fresh connections while uWSGI is stopped gracefully (`q`) and started
    again on the same socket, twice (`systemctl restart`). The known window (README, "Slow
    clients"): the router still accepts after `q`, and what it accepted then is closed
    unanswered when the master ends it, once the workers are gone. What must hold: a payment
    is answered 200 or closed without any answer; every charge the gateway took was answered
    200 and delivered as an order (the unanswered ones never reached a worker); and a payment
    fails only if its connection was opened during a stop."""
    stop = threading.Event()
    answered: list[str] = []
    unanswered: list[tuple[str, float]] = []  # (user, when its connection was opened)
    other: list[str] = []
    stops: list[tuple[float, float]] = []  # (q written, uWSGI gone)

    def pay(n: int) -> None:
        i = 0
        while not stop.is_set():
            i += 1
            user = f"anonymous-stream-{n}-{i}"
            opened = time.monotonic()
            try:
                reply = streamed.pay(user, timeout=30)
            except OSError as exc:  # RemoteDisconnected, a reset: closed without an answer
                unanswered.append((user, opened))
                if not isinstance(exc, ConnectionError):
                    other.append(f"{user}: {exc!r}")
                continue
            if reply.status == 200:
                answered.append(user)
            else:
                other.append(f"{user}: {reply.status} {reply.raw!r}")
            time.sleep(0.01)

    clients = [threading.Thread(target=pay, args=(n,)) for n in range(4)]
    for t in clients:
        t.start()
    try:
        for _ in range(2):
            time.sleep(1.5)
            t0 = time.monotonic()
            streamed.stop_gracefully()
            stops.append((t0, time.monotonic()))
            streamed.start()
        time.sleep(1.5)
    finally:
        stop.set()
        for t in clients:
            t.join(60)
    assert not other, other
    assert len(answered) > 100, "too few payments to tell"
    streamed.wait_outbox_empty()
    orders = [m["user"] for _, m in streamed.messages()]
    assert sorted(orders) == sorted(answered)
    assert len(fresh_stubs.gateway.calls()) == len(answered)
    for user, opened in unanswered:
        # (a connection opened just before `q` may reach the router just after it)
        assert any(q - 0.2 <= opened <= gone for q, gone in stops), (user, opened, stops)
