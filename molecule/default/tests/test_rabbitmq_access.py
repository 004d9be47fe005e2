"""RabbitMQ least privilege: no guest, each service its own user with narrow permissions.

The permissions are checked twice: as the broker lists them, and by what a client logged in
as each user may actually do (the release's pika on the payment host, over the network).
That the payment user can still do all the service does is proved by test_default's real
payment (declare, bind, publish with confirms) and by the failures scenario.
"""

from __future__ import annotations

import json
import os
import subprocess

from conftest import PREFIX

PAYMENT_PERMS = {
    "vhost": "/",
    "configure": r"^(robot-shop|orders)$",
    "write": r"^(robot-shop|orders)$",
    "read": r"^robot-shop$",
}
DISPATCH_PERMS = {"vhost": "/", "configure": "^$", "write": "^$", "read": "^orders$"}

# Runs on the payment host with the release's pika: log in as $AMQP_USER and try each
# operation on its own channel; prints {operation: "ok" | "refused: <reply code>"}.
PROBE = r"""
import json, os, pika
from pika.exceptions import AMQPConnectionError, ChannelClosedByBroker
params = pika.ConnectionParameters("rabbitmq", 5672, "/",
    pika.PlainCredentials(os.environ["AMQP_USER"], os.environ["AMQP_PASS"]), connection_attempts=3)
try:
    conn = pika.BlockingConnection(params)
except AMQPConnectionError as exc:
    print(json.dumps({"login": "refused: %s %r" % (type(exc).__name__, exc)})); raise SystemExit
ops = {
    "declare exchange robot-shop":
        lambda ch: ch.exchange_declare("robot-shop", "direct", durable=True),
    "declare queue orders": lambda ch: ch.queue_declare("orders", durable=True),
    "bind orders": lambda ch: ch.queue_bind("orders", "robot-shop", routing_key="orders"),
    "publish robot-shop": lambda ch: ch.basic_publish("robot-shop", "no-such-key", b"{}"),
    "declare queue other": lambda ch: ch.queue_declare("harden-other", durable=False),
    "declare exchange other": lambda ch: ch.exchange_declare("harden-other", "fanout"),
    "read orders": lambda ch: ch.basic_get("orders", auto_ack=False),
}
out = {"login": "ok"}
for name, op in ops.items():
    ch = conn.channel()
    try:
        op(ch)
        ch.basic_recover(requeue=True)  # give back anything basic_get took
        ch.close()
        out[name] = "ok"
    except ChannelClosedByBroker as exc:
        out[name] = "refused: %d" % exc.reply_code
conn.close()
print(json.dumps(out))
"""


def _probe(user: str, password: str) -> dict[str, str]:
    out = subprocess.run(
        ["podman", "exec", "-e", "AMQP_USER", "-e", "AMQP_PASS", f"{PREFIX}payment",
         "/app/current/venv/bin/python", "-c", PROBE],
        capture_output=True, text=True, check=False, timeout=120,
        env={**os.environ, "AMQP_USER": user, "AMQP_PASS": password},
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    return json.loads(out.stdout)


def _permissions(rabbitmq, user: str) -> list[dict]:
    return json.loads(
        rabbitmq.check_output("rabbitmqctl -q --formatter json list_user_permissions %s", user)
    )


def test_guest_is_deleted_and_refused(rabbitmq, payment):
    users = json.loads(rabbitmq.check_output("rabbitmqctl -q --formatter json list_users"))
    assert "guest" not in [u["user"] for u in users]
    # on the broker itself (loopback_users would refuse a remote guest anyway)
    login = rabbitmq.run("printf guest | rabbitmqctl -q authenticate_user guest")
    assert login.rc != 0, login.stdout
    # and over AMQP from the payment host
    refused = _probe("guest", "guest")
    assert list(refused) == ["login"], refused
    assert "ACCESS_REFUSED" in refused["login"] or "Authentication" in refused["login"], refused


def test_payment_user_has_exactly_the_narrow_permissions(rabbitmq, lab_vars):
    user = lab_vars.get("roboshop_amqp_user", "roboshop")
    assert _permissions(rabbitmq, user) == [PAYMENT_PERMS]


def test_payment_user_may_do_what_the_service_does_and_nothing_else(lab_vars):
    user = lab_vars.get("roboshop_amqp_user", "roboshop")
    assert _probe(user, lab_vars["vault_roboshop_amqp_password"]) == {
        "login": "ok",
        "declare exchange robot-shop": "ok",
        "declare queue orders": "ok",
        "bind orders": "ok",
        "publish robot-shop": "ok",
        "declare queue other": "refused: 403",
        "declare exchange other": "refused: 403",
        "read orders": "refused: 403",
    }


def test_dispatch_user_only_reads_orders(rabbitmq, lab_vars):
    assert _permissions(rabbitmq, "dispatch") == [DISPATCH_PERMS]
    assert _probe("dispatch", lab_vars["vault_roboshop_dispatch_amqp_password"]) == {
        "login": "ok",
        "declare exchange robot-shop": "refused: 403",
        "declare queue orders": "refused: 403",
        "bind orders": "refused: 403",
        "publish robot-shop": "refused: 403",
        "declare queue other": "refused: 403",
        "declare exchange other": "refused: 403",
        "read orders": "ok",
    }
