"""The `orders` queue as RoboShop's services use it, against one given broker node.

Test tool for a RabbitMQ cluster (testing/molecule_support/rabbitmq_cluster.py runs it on a
broker host with pika copied next to it; a payment host's release venv has pika too):

    python3 orders_ha.py declare HOST            # as dispatch does: durable, no arguments
    python3 orders_ha.py publish HOST --count N --prefix P   # persistent, with confirms
    python3 orders_ha.py take HOST --prefix P [--timeout 60]  # ack the messages P-*

declare and publish log in as AMQP_USER / AMQP_PASS (the payment user may declare, bind and
publish), take as QUEUE_AMQP_USER / QUEUE_AMQP_PASS (a reader such as the lab's dispatch):
environment only, never arguments. Each prints one JSON object; exit 1 on failure.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import pika
from pika.exceptions import AMQPError

EXCHANGE = "robot-shop"
QUEUE = "orders"


def connect(host: str, port: int, reader: bool = False) -> pika.BlockingConnection:
    prefix = "QUEUE_AMQP_" if reader else "AMQP_"
    params = pika.ConnectionParameters(
        host=host,
        port=port,
        virtual_host=os.environ.get("AMQP_VHOST", "/"),
        credentials=pika.PlainCredentials(os.environ[prefix + "USER"], os.environ[prefix + "PASS"]),
        connection_attempts=3,
        retry_delay=1,
    )
    return pika.BlockingConnection(params)


def declare(args: argparse.Namespace) -> dict:
    """What dispatch (queue) and payment (exchange, binding) declare: no queue arguments."""
    with connect(args.host, args.port) as connection:
        channel = connection.channel()
        channel.exchange_declare(EXCHANGE, exchange_type="direct", durable=True)
        result = channel.queue_declare(QUEUE, durable=True)
        channel.queue_bind(QUEUE, EXCHANGE, routing_key=QUEUE)
        return {"declared": QUEUE, "messages": result.method.message_count}


def publish(args: argparse.Namespace) -> dict:
    """Persistent messages P-0 .. P-(N-1), each confirmed (and routed: mandatory) by the broker
    before the next is sent; a nack or an unroutable message raises."""
    sent = 0
    with connect(args.host, args.port) as connection:
        channel = connection.channel()
        channel.confirm_delivery()
        for i in range(args.count):
            channel.basic_publish(
                EXCHANGE,
                QUEUE,
                json.dumps({"orderid": f"{args.prefix}-{i}"}).encode(),
                pika.BasicProperties(delivery_mode=2, message_id=f"{args.prefix}-{i}"),
                mandatory=True,
            )
            sent += 1
    return {"confirmed": sent}


def take(args: argparse.Namespace) -> dict:
    """Acknowledge every message whose id starts with P-; others are put back. Retries (a new
    connection each time) until --count are found or --timeout passes: after a node's loss
    the queue has no leader for a moment."""
    found: set[str] = set()
    errors = 0
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline and len(found) < args.count:
        try:
            with connect(args.host, args.port, reader=True) as connection:
                channel = connection.channel()
                held = 0
                while True:
                    method, props, _body = channel.basic_get(QUEUE, auto_ack=False)
                    if method is None:
                        break
                    if (props.message_id or "").startswith(args.prefix + "-"):
                        channel.basic_ack(method.delivery_tag)
                        found.add(props.message_id)
                    else:
                        held += 1
                if held:
                    channel.basic_nack(delivery_tag=0, multiple=True, requeue=True)
        except AMQPError:
            errors += 1
        if len(found) < args.count:
            time.sleep(1)
    return {"found": len(found), "expected": args.count, "connection_errors": errors}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["declare", "publish", "take"])
    parser.add_argument("host")
    parser.add_argument("--port", type=int, default=int(os.environ.get("AMQP_PORT", "5672")))
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--prefix", default="ha")
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args()
    try:
        result = {"declare": declare, "publish": publish, "take": take}[args.action](args)
    except AMQPError as exc:
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
        return 1
    print(json.dumps(result))
    if args.action == "take" and result["found"] != result["expected"]:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
