"""Operator's view of the payment records on this host. Never charges.

    python -m payment.ops list [--state unknown|undelivered|pending|...] [--json]
    python -m payment.ops show ORDERID
    python -m payment.ops republish ORDERID [--confirmed-charged]

Run from the release directory with the release venv and the service's environment (the state
dir comes from PAYMENT_STATE_DIR, as for the service; `--state-dir` overrides it):

    cd /app/current && sudo -u payment env PAYMENT_STATE_DIR=/var/lib/payment \\
        venv/bin/python -m payment.ops list --state unknown

`republish` sends one record's order message through the normal publisher-confirm path
(persistent, mandatory, message_id = orderid; the queue and binding declared) and marks it
delivered only on the broker's confirm; it needs the AMQP_* settings of the service. A
`charged` record is republished as it is (consumers de-duplicate by message_id). An `unknown`
record is published only with `--confirmed-charged`: the operator has checked with the
gateway that the money was taken (if it was not, leave it, or refund nothing: nothing to do).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

from .config import ConfigError, Settings
from .records import CHARGED, DELIVERED, STATES, UNKNOWN, Record, Records

ALIASES = {"undelivered": (CHARGED,), "all": STATES}


def _row(record: Record, with_body: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "orderid": record.orderid,
        "state": record.state,
        "user": record.user,
        "idempotency_key": record.key,
        "request_id": record.request_id,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.created)),
        "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.updated)),
        "attempts": record.attempts,
        "note": record.note,
    }
    if with_body:
        out["order"] = json.loads(record.body)
    return out


# How long `republish` holds a charged record for its own publish (connects to every
# AMQP_HOST in turn, 10 s each at most, then the confirm): no drainer publishes it meanwhile.
OPS_HOLD = 120.0


def publish_once(settings: Settings, record: Record, timeout: float = 10.0) -> bool:
    """Publish one record's message like the service does; True on the broker's confirm."""
    import pika
    from pika.exchange_type import ExchangeType

    from .amqp import connection_parameters

    params = connection_parameters(
        settings, socket_timeout=timeout, blocked_connection_timeout=timeout
    )  # every host of AMQP_HOST, tried in order
    conn = pika.BlockingConnection(params)
    try:
        channel = conn.channel()
        channel.exchange_declare(settings.amqp_exchange, ExchangeType.direct, durable=True)
        channel.queue_declare(settings.amqp_queue, durable=True)
        channel.queue_bind(settings.amqp_queue, settings.amqp_exchange, settings.amqp_routing_key)
        channel.confirm_delivery()
        props = pika.BasicProperties(
            content_type="application/json",
            delivery_mode=pika.DeliveryMode.Persistent,
            message_id=record.orderid,
            timestamp=int(time.time()),
            headers={"x-request-id": record.request_id},
        )
        try:
            channel.basic_publish(
                settings.amqp_exchange,
                settings.amqp_routing_key,
                record.body,
                props,
                mandatory=True,
            )
        except (pika.exceptions.UnroutableError, pika.exceptions.NackError):
            return False
        return True
    finally:
        if conn.is_open:
            conn.close()


def main(argv: Sequence[str] | None = None, settings: Settings | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m payment.ops", description=__doc__)
    parser.add_argument("--state-dir", help="default: PAYMENT_STATE_DIR (as the service)")
    sub = parser.add_subparsers(dest="command", required=True)
    listing = sub.add_parser("list", help="payments by state (default: unknown + undelivered)")
    listing.add_argument("--state", action="append", choices=sorted({*STATES, *ALIASES}))
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    listing.add_argument("--limit", type=int, default=1000)
    show = sub.add_parser("show", help="one payment, with its order message")
    show.add_argument("orderid")
    again = sub.add_parser("republish", help="publish one payment's order (publisher confirm)")
    again.add_argument("orderid")
    again.add_argument(
        "--confirmed-charged",
        action="store_true",
        help="for an unknown payment: the gateway confirmed the charge",
    )
    args = parser.parse_args(argv)
    settings = settings or Settings.from_env()
    if args.command == "republish":
        try:
            settings.check_amqp_credentials()  # before any record changes
        except ConfigError as exc:
            print(f"payment.ops: {exc}", file=sys.stderr)
            return 2
    records = Records(args.state_dir or settings.state_dir)

    if args.command == "list":
        states: list[str] = []
        for name in args.state or [UNKNOWN, "undelivered"]:
            states.extend(ALIASES.get(name, (name,)))
        rows = records.list(tuple(dict.fromkeys(states)), args.limit)
        counts = records.counts(STATES)
        if args.json:
            for record in rows:
                print(json.dumps(_row(record)))
        else:
            print(" ".join(f"{s}={counts[s]}" for s in STATES))
            for record in rows:
                r = _row(record)
                print(f"{r['orderid']}  {r['state']:<9} {r['created']}  user={r['user']}"
                      f"  key={r['idempotency_key'] or '-'}  {r['note']}")  # fmt: skip
        return 0

    record = records.get(args.orderid)
    if record is None:
        print(f"no payment {args.orderid}", file=sys.stderr)
        return 2
    if args.command == "show":
        print(json.dumps(_row(record, with_body=True), indent=2))
        return 0
    # republish
    if record.state == UNKNOWN:
        if not args.confirmed_charged:
            print(
                "unknown charge state: check with the gateway first, then pass --confirmed-charged",
                file=sys.stderr,
            )
            return 3
        # held for this publish: the service's drainer does not publish it at the same time
        records.requeue(record.orderid, "ops: charge confirmed by the operator", OPS_HOLD)
    elif record.state == CHARGED:
        if not records.hold(record.orderid, OPS_HOLD):
            print(
                f"payment {record.orderid} is being published by the service's drainer now; "
                "`show` it again in a minute",
                file=sys.stderr,
            )
            return 4
    elif record.state != DELIVERED:
        print(f"payment {record.orderid} is {record.state}: nothing to publish", file=sys.stderr)
        return 3
    try:
        confirmed = publish_once(settings, record)
    except Exception as exc:  # pika's connection errors
        print(f"broker: {type(exc).__name__}: {exc}", file=sys.stderr)
        confirmed = False
    if not confirmed:
        if record.state != DELIVERED:
            records.release(record.orderid, 0.0)  # the drainer's, from now on
        print("the broker did not confirm; the drainer will publish it", file=sys.stderr)
        return 1
    records.delivered(record.orderid)
    print(f"published {record.orderid} (message_id), confirmed by the broker")
    return 0


if __name__ == "__main__":
    sys.exit(main())
