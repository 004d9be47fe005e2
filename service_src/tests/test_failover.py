"""AMQP_HOST lists several brokers: the publisher connects to the first reachable one and,
when its connection is lost, fails over to the next. Each "node" is a TCP forwarder on its
own loopback address (all on one port, like AMQP_PORT) to the real local RabbitMQ."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator

import pika
import pytest
from conftest import AMQP, Payment, Stubs, delete_topology, free_port, make_payment
from payment.config import ConfigError, Settings
from tcpproxy import TcpProxy

NODE_A, NODE_B, NOWHERE = "127.0.0.2", "127.0.0.3", "127.0.0.4"  # nothing listens on NOWHERE


@pytest.mark.parametrize(
    ("raw", "hosts"),
    [
        ("rabbitmq", ("rabbitmq",)),
        ("rabbit1,rabbit2,rabbit3", ("rabbit1", "rabbit2", "rabbit3")),
        (" rabbit1 , 10.0.0.2,::1 ", ("rabbit1", "10.0.0.2", "::1")),
        ("mq.example.com.", ("mq.example.com.",)),
    ],
)
def test_amqp_host_list_is_parsed(raw: str, hosts: tuple[str, ...]) -> None:
    assert Settings.from_env({"AMQP_HOST": raw}).amqp_hosts == hosts


@pytest.mark.parametrize(
    "raw", ["rabbit1,,rabbit2", "rabbit1,", "rabbit mq!", "1.2.3.999", "-mq", "a,a", "mq_1"]
)
def test_a_bad_amqp_host_list_is_refused(raw: str) -> None:
    with pytest.raises(ConfigError, match="AMQP_HOST"):
        Settings.from_env({"AMQP_HOST": raw})


def declare_like_dispatch(queue: str) -> None:
    """RoboShop's dispatch: QueueDeclare(queue, durable=true, autoDelete=false,
    exclusive=false, noWait=false, args=nil). A differing declaration is refused
    (PRECONDITION_FAILED closes the channel)."""
    conn = pika.BlockingConnection(AMQP)
    try:
        conn.channel().queue_declare(queue, durable=True, arguments=None)
    finally:
        conn.close()


@pytest.fixture
def port() -> int:
    return free_port()


def start_payment(stubs: Stubs, port: int, hosts: str) -> Payment:
    payment = make_payment(stubs, AMQP_HOST=hosts, AMQP_PORT=str(port), PAYMENT_PROCESSES="1")
    declare_like_dispatch(payment.queue)  # the queue exists as dispatch declares it
    payment.start()  # waits for /health: rabbitmq connected
    return payment


@pytest.fixture
def cleanup() -> Iterator[list[Payment]]:
    made: list[Payment] = []
    yield made
    for payment in made:
        payment.stop()
        delete_topology(payment.exchange, payment.queue)
        shutil.rmtree(payment.state_dir, ignore_errors=True)


def test_first_host_unreachable_connects_to_the_next(
    rabbitmq: None, fresh_stubs: Stubs, port: int, cleanup: list[Payment]
) -> None:
    node = TcpProxy(NODE_A, port, ("127.0.0.1", 5672))
    try:
        payment = start_payment(fresh_stubs, port, f"{NOWHERE},{NODE_A}")
        cleanup.append(payment)
        health = payment.get("/health").json
        assert health["rabbitmq"] == "connected" and health["rabbitmq_host"] == NODE_A
        reply = payment.pay("anonymous-fo1")
        assert reply.status == 200, reply.raw
        assert [m["orderid"] for _, m in payment.messages()] == [reply.json["orderid"]]
        declare_like_dispatch(payment.queue)  # the service's declaration matches dispatch's
    finally:
        node.kill()


def test_lost_connection_fails_over_to_the_next_host(
    rabbitmq: None, fresh_stubs: Stubs, port: int, cleanup: list[Payment]
) -> None:
    a = TcpProxy(NODE_A, port, ("127.0.0.1", 5672))
    b = TcpProxy(NODE_B, port, ("127.0.0.1", 5672))
    try:
        payment = start_payment(fresh_stubs, port, f"{NODE_A},{NODE_B}")
        cleanup.append(payment)
        assert payment.get("/health").json["rabbitmq_host"] == NODE_A
        assert b.accepted == 0
        first = payment.pay("anonymous-fo2")
        assert first.status == 200, first.raw
        a.kill()  # node A goes away with its connections
        deadline = time.monotonic() + 20
        health = payment.get("/health").json
        while health.get("rabbitmq_host") != NODE_B and time.monotonic() < deadline:
            time.sleep(0.1)
            health = payment.get("/health").json
        assert health["rabbitmq"] == "connected" and health["rabbitmq_host"] == NODE_B, health
        orders = [payment.pay(f"anonymous-fo{i}") for i in range(3, 6)]
        assert {r.status for r in orders} == {200}
        payment.wait_outbox_empty()
        got = sorted(m["orderid"] for _, m in payment.messages())
        assert got == sorted(r.json["orderid"] for r in [first, *orders])
    finally:
        a.kill()
        b.kill()
