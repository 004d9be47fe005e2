"""The delivery ledger: decides whether an *uncertain* publish reached RabbitMQ.

A publish is uncertain when the connection died after the message was sent but before its
confirm arrived: the broker may or may not have queued it. Every order message is also routed
to a RabbitMQ stream (`AMQP_LEDGER_QUEUE`, bound to the exchange with the same routing key,
size-capped). Streams are read without consuming, so any worker can look: publish a fence
message into the stream (confirmed), read the stream from shortly before the uncertain
publish up to the fence, and collect the message_ids seen. An uncertain order found there is
already delivered (its outbox row is dropped); one not found is published again.
"""

from __future__ import annotations

import datetime
import time
import uuid

import pika

from .config import Settings

STREAM_ARGUMENTS = {
    "x-queue-type": "stream",
    "x-max-length-bytes": 512 * 1024 * 1024,
    "x-stream-max-segment-size-bytes": 16 * 1024 * 1024,
}


class Ledger:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.queue = settings.amqp_ledger_queue
        self.params = pika.ConnectionParameters(
            host=settings.amqp_host,
            port=settings.amqp_port,
            virtual_host=settings.amqp_vhost,
            credentials=pika.PlainCredentials(settings.amqp_user, settings.amqp_pass),
            heartbeat=30,
            connection_attempts=1,
            socket_timeout=max(settings.connect_timeout, 1.0),
            blocked_connection_timeout=30,
        )

    def seen(self, since: float, wanted: set[str], timeout: float = 20.0) -> set[str]:
        """Which of `wanted` (message_ids) are in the stream; raises when it cannot tell."""
        conn = pika.BlockingConnection(self.params)
        try:
            channel = conn.channel()
            channel.confirm_delivery()
            fence = f"fence-{uuid.uuid4()}"
            channel.basic_publish(
                "",
                self.queue,
                b"",
                pika.BasicProperties(message_id=fence, delivery_mode=2),
                mandatory=True,
            )
            channel.basic_qos(prefetch_count=1000)
            start = datetime.datetime.fromtimestamp(since, tz=datetime.timezone.utc)
            found: set[str] = set()
            deadline = time.monotonic() + timeout
            for method, props, _body in channel.consume(
                self.queue,
                arguments={"x-stream-offset": start},
                inactivity_timeout=0.5,
            ):
                if method is None:
                    if time.monotonic() > deadline:
                        raise TimeoutError("ledger fence not reached")
                    continue
                channel.basic_ack(method.delivery_tag)
                if props.message_id == fence:
                    break
                if props.message_id in wanted:
                    found.add(props.message_id)
            channel.cancel()
            return found
        finally:
            if conn.is_open:
                conn.close()
