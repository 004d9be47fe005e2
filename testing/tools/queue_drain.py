"""Take every order from the RabbitMQ `orders` queue and print them as JSON.

Test tool. Runs on a payment host with the release's Python (it has pika) and the connection
settings the service itself uses (read as queue_get.py does, which must sit next to it):

    /app/current/venv/bin/python queue_drain.py [--settle 3] [--queue orders]

Every message is acknowledged (removed). It stops once the queue has stayed empty for
--settle seconds (orders still on their way from a host's outbox get that long to arrive).
Prints {"orders": [{"orderid", "message_id", "redelivered"}, ...]} in queue order.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from queue_get import ENV_FILE, connect


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queue", default="orders")
    parser.add_argument("--settle", type=float, default=3.0)
    parser.add_argument("--env-file", type=Path, default=ENV_FILE)
    args = parser.parse_args()
    connection = connect(args.env_file)
    orders = []
    try:
        channel = connection.channel()
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < args.settle:
            method, props, body = channel.basic_get(args.queue, auto_ack=False)
            if method is None:
                time.sleep(0.2)
                continue
            try:
                orderid = json.loads(body).get("orderid")
            except ValueError:
                orderid = None
            orders.append(
                {
                    "orderid": orderid,
                    "message_id": props.message_id,
                    "redelivered": method.redelivered,
                }
            )
            channel.basic_ack(method.delivery_tag)
            quiet_since = time.monotonic()
    finally:
        connection.close()
    print(json.dumps({"orders": orders}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
