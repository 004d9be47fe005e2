"""Take one order from the RabbitMQ `orders` queue by its orderid, and print it as JSON.

Test and lab tool. Runs on a payment host with the release's Python (it has pika) and reads
the connection settings the service itself uses (its unit and /etc/roboshop/payment.env):

    /app/current/venv/bin/python queue_get.py ORDERID [--timeout 10]

The service's own user may not read the orders queue (the rabbitmq role gives it no read
permission there): set QUEUE_AMQP_USER and QUEUE_AMQP_PASS (environment, not arguments) to
read as a consumer such as the lab's `dispatch`.

Messages of other orders are put back, in their order; the matching one is acknowledged,
so a test proves the order really sat in the queue. Exit 1 when it does not arrive in time.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pika

ENV_FILE = Path("/etc/roboshop/payment.env")


def read_env(path: Path) -> dict[str, str]:
    """The service's environment: the unit's Environment= lines, then its EnvironmentFile."""
    shown = subprocess.run(
        ["systemctl", "show", "--property=Environment", "--value", "payment.service"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    env = dict(item.split("=", 1) for item in shlex.split(shown) if "=" in item)
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            env[key.strip()] = value.strip().strip('"').strip("'")
    return env


def connect(env_file: Path) -> pika.BlockingConnection:
    """A connection to the broker with the settings the payment service itself uses; the
    user and password from QUEUE_AMQP_USER / QUEUE_AMQP_PASS when they are set."""
    env = read_env(env_file)
    if os.environ.get("QUEUE_AMQP_USER"):
        env["AMQP_USER"] = os.environ["QUEUE_AMQP_USER"]
        env["AMQP_PASS"] = os.environ.get("QUEUE_AMQP_PASS", "")
    # AMQPS as the service does it (AMQP_TLS, AMQP_CA_FILE): the broker's certificate and
    # its name verified
    tls = env.get("AMQP_TLS", "").strip().lower() in ("1", "true", "yes", "on")
    context = ssl.create_default_context(cafile=env.get("AMQP_CA_FILE") or None) if tls else None
    # AMQP_HOST may list the nodes of a cluster (h1,h2,h3): pika tries them in turn
    params = [
        pika.ConnectionParameters(
            host=host.strip(),
            port=int(env.get("AMQP_PORT", "5671" if tls else "5672")),
            ssl_options=pika.SSLOptions(context, server_hostname=host.strip()) if tls else None,
            virtual_host=env.get("AMQP_VHOST", "/"),
            credentials=pika.PlainCredentials(env.get("AMQP_USER", "guest"), env["AMQP_PASS"]),
            connection_attempts=3,
            retry_delay=1,
        )
        for host in env.get("AMQP_HOST", "localhost").split(",")
    ]
    return pika.BlockingConnection(params)


def take(channel, queue: str, orderid: str, deadline: float) -> dict | None:
    """Scan the queue for `orderid`; acknowledge it, put every other message back in place.

    Other orders stay unacknowledged while the scan goes on (a nack with requeue would put
    a message back at the head, where the next basic_get returns it again, so the scan
    would never pass it), then all of them are requeued together, in their old order.
    """
    while time.monotonic() < deadline:
        held = 0
        try:
            while True:
                method, props, body = channel.basic_get(queue, auto_ack=False)
                if method is None:
                    break
                held += 1
                try:
                    message = json.loads(body)
                except ValueError:
                    message = {}
                if props.message_id == orderid or message.get("orderid") == orderid:
                    channel.basic_ack(method.delivery_tag)
                    return {
                        "message_id": props.message_id,
                        "delivery_mode": props.delivery_mode,
                        "routing_key": method.routing_key,
                        "exchange": method.exchange,
                        "headers": props.headers or {},
                        "body": message,
                    }
        finally:
            if held:
                channel.basic_nack(delivery_tag=0, multiple=True, requeue=True)
        time.sleep(0.2)
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("orderid")
    parser.add_argument("--queue", default="orders")
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("--env-file", type=Path, default=ENV_FILE)
    args = parser.parse_args()
    connection = connect(args.env_file)
    try:
        found = take(
            connection.channel(), args.queue, args.orderid, time.monotonic() + args.timeout
        )
    finally:
        connection.close()
    if found is None:
        print(json.dumps({"error": f"order {args.orderid} not in queue {args.queue}"}))
        return 1
    print(json.dumps(found))
    return 0


if __name__ == "__main__":
    sys.exit(main())
