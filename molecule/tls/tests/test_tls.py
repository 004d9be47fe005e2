"""AMQPS on the converged hosts (roboshop_amqp_tls_enabled with the lab CA): the broker's TLS
listener and files, payment connected over TLS with the broker verified, a real order through
it, and a wrong CA refused, by the service and by the role's health gate (rolled back)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import roboshop_testlib as lib

PAYMENT = "tls-payment"
HEALTH = f"http://localhost:{lib.PAYMENT_PORT}/health"
CA_FILE = "/etc/roboshop/amqp-ca.pem"
OTHER_CA_ON_HOST = "/tmp/roboshop-other-ca.pem"
# from the payment host, as payment reaches the broker (AMQP_HOST=rabbitmq)
S_CLIENT = (
    "openssl s_client -connect rabbitmq:5671 -servername rabbitmq -verify_return_error "
    "-verify_hostname {name} -CAfile {ca} </dev/null 2>&1"
)


def health(payment) -> tuple[int, dict]:
    code, text = lib.http(payment, "GET", HEALTH)
    try:
        return code, json.loads(text)
    except ValueError:
        return code, {"text": text}


def connected(payment) -> bool:
    code, body = health(payment)
    return code == 200 and body.get("rabbitmq") == "connected"


def fingerprint(pem: str) -> str:
    out = subprocess.run(
        ["openssl", "x509", "-noout", "-fingerprint", "-sha256"],
        input=pem, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return out.stdout.strip().split("=", 1)[-1]


def other_ca_on(pki: Path) -> str:
    """Copy the second lab CA (it signed nothing here) onto the payment host."""
    subprocess.run(
        ["podman", "cp", str(pki / "other-ca.pem"), f"{PAYMENT}:{OTHER_CA_ON_HOST}"], check=True
    )
    return OTHER_CA_ON_HOST


# -- the broker -------------------------------------------------------------------------------
def test_broker_tls_files_and_listeners(rabbitmq, pki: Path):
    tls_dir = rabbitmq.file("/etc/rabbitmq/tls")
    assert (tls_dir.mode, tls_dir.user, tls_dir.group) == (0o750, "root", "rabbitmq")
    key = rabbitmq.file("/etc/rabbitmq/tls/key.pem")
    assert (key.mode, key.user, key.group) == (0o640, "root", "rabbitmq")
    assert key.content_string.strip() == (pki / "rabbitmq.key").read_text().strip()
    for name, src in (("ca.pem", "ca.pem"), ("cert.pem", "rabbitmq.pem")):
        f = rabbitmq.file(f"/etc/rabbitmq/tls/{name}")
        assert f.mode == 0o644
        assert f.content_string.strip() == (pki / src).read_text().strip()
    conf = rabbitmq.file("/etc/rabbitmq/rabbitmq.conf").content_string.splitlines()
    expected = [
        "listeners.ssl.default = 5671",
        "ssl_options.verify = verify_none",
        "ssl_options.fail_if_no_peer_cert = false",
        "listeners.tcp.default = 5672",
    ]
    assert [line for line in expected if line not in conf] == [], conf
    listening = rabbitmq.check_output("ss -Hltn")
    assert re.search(r":5671\s", listening), listening
    assert re.search(r":5672\s", listening), listening  # not tls_only: plain AMQP stays


def test_broker_presents_the_lab_certificate(payment, pki: Path):
    out = payment.run(S_CLIENT.format(name="rabbitmq", ca=CA_FILE))
    assert out.rc == 0, out.stdout
    assert "Verify return code: 0 (ok)" in out.stdout, out.stdout
    presented = payment.check_output(
        "openssl s_client -connect rabbitmq:5671 -servername rabbitmq </dev/null 2>/dev/null"
        " | openssl x509 -noout -fingerprint -sha256"
    )
    assert presented.strip().split("=", 1)[-1] == fingerprint((pki / "rabbitmq.pem").read_text())


def test_broker_certificate_fails_another_ca_and_another_name(payment, pki: Path):
    wrong_ca = payment.run(S_CLIENT.format(name="rabbitmq", ca=other_ca_on(pki)))
    assert wrong_ca.rc != 0, wrong_ca.stdout
    # RabbitMQ (Erlang's ssl) sends the lab CA in its chain: OpenSSL says "self-signed
    # certificate in certificate chain" (19) rather than "unable to get local issuer" (20)
    assert "verify error:num=19:" in wrong_ca.stdout or "verify error:num=20:" in wrong_ca.stdout, (
        wrong_ca.stdout
    )
    wrong_name = payment.run(S_CLIENT.format(name="not-the-broker", ca=CA_FILE))
    assert wrong_name.rc != 0, wrong_name.stdout
    assert "hostname mismatch" in wrong_name.stdout.lower(), wrong_name.stdout


# -- payment over AMQPS -----------------------------------------------------------------------
def test_payment_unit_and_ca_file(payment, pki: Path):
    env = payment.check_output("systemctl show --property=Environment --value payment.service")
    assert {"AMQP_TLS=true", "AMQP_PORT=5671", f"AMQP_CA_FILE={CA_FILE}",
            "AMQP_HOST=rabbitmq"} <= set(env.split()), env  # fmt: skip
    ca = payment.file(CA_FILE)
    assert (ca.mode, ca.user, ca.group) == (0o644, "root", "root")
    assert ca.content_string.strip() == (pki / "ca.pem").read_text().strip()


def test_payment_is_connected_over_tls(payment, rabbitmq):
    assert lib.wait_for(lambda: connected(payment), timeout=60), health(payment)
    rows = json.loads(
        rabbitmq.check_output("rabbitmqctl -q --formatter json list_connections user ssl")
    )
    payment_rows = [row for row in rows if row["user"] == "roboshop"]
    assert payment_rows, rows  # one per uWSGI worker
    assert all(row["ssl"] in (True, "true") for row in payment_rows), rows


def test_a_payments_order_reaches_the_queue(payment, stubs):
    """Paid over AMQPS, and read back by the dispatch user over AMQPS too (queue_get.py
    connects with the service's settings)."""
    order = lib.pays_and_queues(payment, stubs, PAYMENT)
    assert order["routing_key"] == "orders"


# -- a wrong CA -------------------------------------------------------------------------------
def test_a_wrong_ca_makes_health_report_disconnected(payment, pki: Path):
    other = other_ca_on(pki)
    payment.check_output(f"cp -p {CA_FILE} {CA_FILE}.keep && cp {other} {CA_FILE}")
    try:
        payment.check_output("systemctl restart payment.service")

        def disconnected():
            code, body = health(payment)
            return (code, body) if body.get("rabbitmq") == "disconnected" else None

        seen = lib.wait_for(disconnected, timeout=60)
        assert seen, health(payment)
        code, body = seen
        assert code == 503, body  # payment_health_require_broker: the role's default
        journal = payment.check_output(
            "journalctl -u payment.service -o cat --no-pager -n 200 | grep 'amqp connect failed'"
            " | tail -3 || true"
        )
        assert "CERTIFICATE_VERIFY_FAILED" in body.get("rabbitmq_error", "") + journal, (
            body, journal,
        )  # fmt: skip
    finally:
        payment.check_output(f"mv {CA_FILE}.keep {CA_FILE} && systemctl restart payment.service")
    assert lib.wait_for(lambda: connected(payment), timeout=60), health(payment)


def test_a_deploy_of_a_wrong_ca_is_rolled_back(payment, stubs, pki: Path, tmp_path: Path):
    """The health gate: payment was ready, the new CA makes it unready, the run fails and
    puts the previous CA file back (the role keeps it like the env file)."""
    assert lib.wait_for(lambda: connected(payment), timeout=60), health(payment)
    inventory = lib.copy_inventory(
        tmp_path / "inventory", {"roboshop_amqp_tls_ca": (pki / "other-ca.pem").read_text()}
    )
    run = lib.run_playbook("playbooks/payment.yml", inventory=inventory)
    assert run.rc != 0, "the deploy of a wrong CA passed its health gate"
    assert "ROLLED BACK" in run.output and CA_FILE in run.output, run.output[-3000:]
    assert payment.file(CA_FILE).content_string.strip() == (pki / "ca.pem").read_text().strip()
    assert not payment.run(f"ls {CA_FILE}.*~").stdout.strip(), "a backup copy was left"
    assert lib.wait_for(lambda: connected(payment), timeout=60), health(payment)
    code, text, _ = lib.pay(payment, stubs)
    assert code == 200, text
