"""queue_get.take against the real local RabbitMQ (scripts/local-rabbitmq.sh starts it).

The molecule scenarios and the lab demo prove "this order is in the queue" with this tool,
so it must find an order that sits behind others, and leave those others where they were.
"""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pika
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from queue_get import take

AMQP = pika.ConnectionParameters("127.0.0.1", 5672, "/", pika.PlainCredentials("guest", "guest"))


@pytest.fixture
def channel() -> Iterator[tuple[object, str]]:
    connection = pika.BlockingConnection(AMQP)
    ch = connection.channel()
    queue = f"test.queue_get.{uuid.uuid4().hex[:8]}"
    ch.queue_declare(queue, auto_delete=False)
    try:
        yield ch, queue
    finally:
        ch.queue_delete(queue)
        connection.close()


def publish(ch, queue: str, orderid: str) -> None:
    body = f'{{"orderid": "{orderid}"}}'.encode()
    ch.basic_publish("", queue, body, pika.BasicProperties(message_id=orderid))


def remaining(ch, queue: str) -> list[str]:
    ids = []
    while True:
        method, props, _ = ch.basic_get(queue, auto_ack=True)
        if method is None:
            return ids
        ids.append(props.message_id)


def test_finds_an_order_behind_others_and_keeps_them_in_order(channel):
    ch, queue = channel
    for orderid in ("first", "second", "wanted", "last"):
        publish(ch, queue, orderid)
    found = take(ch, queue, "wanted", time.monotonic() + 5)
    assert found is not None, "the order behind others was not found"
    assert found["message_id"] == "wanted"
    assert found["body"] == {"orderid": "wanted"}
    assert remaining(ch, queue) == ["first", "second", "last"]


def test_missing_order_times_out_and_takes_nothing(channel):
    ch, queue = channel
    publish(ch, queue, "other")
    assert take(ch, queue, "absent", time.monotonic() + 0.5) is None
    assert remaining(ch, queue) == ["other"]
