"""Failures, each proven on the hosts: the real ansible-playbook against converged hosts."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import zipfile
from pathlib import Path

import pytest
import roboshop_testlib as lib

PAYMENT = "fail-payment"
HEALTH = f"http://localhost:{lib.PAYMENT_PORT}/health"

# What a deploy may change, per host: paths (type, mode, owner, size, mtime, link target),
# file contents, and the services' main processes.
PAYMENT_STATE = (
    "find /app /etc/roboshop /etc/systemd/system /var/lib/apt/lists -xdev "
    "-printf '%p %y %m %u %g %s %T@ %l\\n' 2>/dev/null | sort; "
    "sha256sum /etc/roboshop/* /etc/systemd/system/payment.service; "
    "systemctl show --property=MainPID,ExecMainStartTimestamp payment.service"
)
RABBITMQ_STATE = (
    "find /etc/rabbitmq /var/lib/apt/lists -xdev "
    "-printf '%p %y %m %u %g %s %T@ %l\\n' 2>/dev/null | sort; "
    "sha256sum /etc/rabbitmq/*; "
    "systemctl show --property=MainPID,ExecMainStartTimestamp rabbitmq-server.service; "
    "rabbitmqctl -q list_users; rabbitmqctl -q list_permissions"
)


def state(payment, rabbitmq) -> dict[str, str]:
    return {
        "payment": payment.run(PAYMENT_STATE).stdout,
        "rabbitmq": rabbitmq.run(RABBITMQ_STATE).stdout,
    }


# inventory value -> words the refusal must contain (the variable it names)
BAD_VALUES = {
    "placeholder": ({"roboshop_cart_host": "<CART-SERVER-IPADDRESS>"}, ["roboshop_cart_host"]),
    "malformed-port": ({"roboshop_user_port": "80eighty"}, ["roboshop_user_port"]),
    "malformed-host": ({"roboshop_amqp_host": "rabbit mq!"}, ["roboshop_amqp_host"]),
    "lab-password-outside-lab": (
        {"roboshop_environment": "production"},
        ["vault_roboshop_amqp_password", "lab password"],
    ),
    # the lab's group_vars name a Redis host (for the scenarios that have one): empty here
    "redis-backend-without-redis": (
        {"roboshop_payment_idempotency_backend": "redis", "roboshop_redis_host": ""},
        ["roboshop_redis_host", "group redis is empty"],
    ),
}
# cases that add hosts to the inventory: {group: {host: vars}} (never contacted: refused first)
EXTRA_HOSTS = {
    # two payment hosts on the default sqlite backend: a retry reaching the other host would
    # charge again; the refusal names the variable to set.
    "sqlite-with-two-payment-hosts": (
        {"payment": {"fail-payment-2": {"ansible_host": "192.0.2.10"}}},
        ["roboshop_payment_idempotency_backend", "group payment has 2 hosts"],
    ),
}
BAD_VALUES.update({case: ({}, words) for case, (_, words) in EXTRA_HOSTS.items()})


@pytest.mark.parametrize("case", sorted(BAD_VALUES))
def test_bad_inventory_value_changes_nothing(case, payment, rabbitmq, tmp_path: Path):
    overrides, words = BAD_VALUES[case]
    hosts = EXTRA_HOSTS.get(case, (None,))[0]
    inventory = lib.copy_inventory(tmp_path / "inventory", overrides, hosts)
    before = state(payment, rabbitmq)
    assert "/app/current" in before["payment"] and "payment.service" in before["payment"]
    # With a changed release too: had the preflight let it through, the hosts would change.
    with lib.release_copy(f"refused-{case}") as src:
        run = lib.run_playbook(
            "site.yml", "-e", f"payment_source_dir={src}", inventory=inventory, timeout=600
        )
    assert run.rc != 0, "the play accepted a bad inventory value"
    assert "Preflight refused the inventory, nothing was changed" in run.output
    for word in words:
        assert word in run.output, f"the refusal does not name {word!r}"
    assert state(payment, rabbitmq) == before, "a host changed although the play was refused"
    assert run.changed() == 0, run.recap()


@pytest.fixture(scope="module")
def broken_deploy(payment):
    """Deploy a release whose app cannot start (once for the tests below)."""
    previous = lib.current_release(payment)
    assert lib.http(payment, "GET", HEALTH)[0] == 200
    with lib.release_copy("broken", lib.break_app) as src:
        # 15 x 2 s for liveness (the default is 30 x 2): this release never becomes live, and
        # the one put back is live in a few seconds; the gate's wait is not what is tested
        run = lib.run_playbook(
            "site.yml", "-e", f"payment_source_dir={src}", "-e", "payment_health_retries=15"
        )
    return previous, run


def test_release_that_cannot_start_is_rolled_back(broken_deploy, payment, stubs):
    previous, run = broken_deploy
    assert run.rc != 0, "the play did not fail"
    assert f"did not become live on {PAYMENT}" in run.output, "no failure message"
    assert f"ROLLED BACK: /app/current -> {previous} again, and it is live." in run.output
    # The previous release is the current one, and it is what runs and serves.
    assert lib.current_release(payment) == previous
    assert payment.service("payment").is_running
    cwd = payment.check_output("readlink /proc/%s/cwd", str(lib.main_pid(payment)))
    assert cwd == previous, f"payment runs from {cwd}, not from {previous}"
    assert lib.wait_for(lambda: lib.http(payment, "GET", HEALTH)[0] == 200, timeout=30)
    code, text, _ = lib.pay(payment, stubs)
    assert code == 200, text
    order = lib.take_order(PAYMENT, json.loads(text)["orderid"], timeout=60)
    assert order["routing_key"] == "orders"


def test_failed_release_message_names_the_cause(broken_deploy):
    """The message must say *why* the release could not start: the app's own error."""
    _, run = broken_deploy
    assert run.rc != 0
    assert "this release is broken on purpose" in run.output, (
        "the failure message does not quote the app's error (the journal lines it shows "
        "are from the last restart attempt only)"
    )


def _diagnose(payment) -> str:
    """What the service says about the broker and its outbox (for a failure message)."""
    journal = payment.run(
        "journalctl -u payment.service -o cat --no-pager -n 400 | grep -v '/health' | tail -25"
    ).stdout
    return f"outbox pending: {lib.outbox_pending(payment)}\nlast journal lines:\n{journal}"


def test_rabbitmq_down_during_deploy(payment, rabbitmq, stubs):
    rabbitmq.check_output("systemctl stop rabbitmq-server.service")
    outage_payment = None
    try:
        with lib.release_copy("broker-down") as src:
            run = lib.run_playbook("playbooks/payment.yml", "-e", f"payment_source_dir={src}")
        assert run.rc == 0, "the deploy failed while only RabbitMQ was down"
        reported = re.search(rf"WARNING: payment \S+ is live on {PAYMENT} but .*503", run.output)
        assert reported, "the deploy did not report that payment is not ready"
        release = lib.current_release(payment)
        assert payment.file(f"{release}/RELEASE").content_string.startswith("broker-down ")
        assert payment.service("payment").is_running
        pid = lib.main_pid(payment)
        code, text = lib.http(payment, "GET", HEALTH)
        assert code == 503, text
        assert json.loads(text)["rabbitmq"] == "disconnected"
        outage_payment = lib.pay(payment, stubs)
        print(f"payment while RabbitMQ is down -> {outage_payment[0]} {outage_payment[1]}")
    finally:
        rabbitmq.check_output("systemctl start rabbitmq-server.service")

    # Back without a restart of payment: ready again, and payments reach the queue.
    ready = lib.wait_for(lambda: lib.http(payment, "GET", HEALTH)[0] == 200, timeout=120)
    assert ready, lib.http(payment, "GET", HEALTH)
    assert lib.main_pid(payment) == pid, "payment was restarted"
    code, text, _ = lib.pay(payment, stubs)
    assert code == 200, text
    # (a worker that has not reconnected yet keeps it in the outbox for a moment)
    orderid = json.loads(text)["orderid"]
    try:
        order = lib.take_order(PAYMENT, orderid, timeout=90)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{_diagnose(payment)}") from None
    assert order["routing_key"] == "orders"
    # A 200 given during the outage is a promise: that order reaches the queue as well.
    if outage_payment[0] == 200:
        orderid = json.loads(outage_payment[1])["orderid"]
        try:
            order = lib.take_order(PAYMENT, orderid, timeout=90)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{_diagnose(payment)}") from None
        assert order["body"]["orderid"] == orderid
    assert lib.main_pid(payment) == pid, "payment was restarted"


# The runbooks' hand-made unit: root, binds the payment port itself, stopped with kill -9.
# (python3 -m http.server stands in for its uWSGI: what matters is who holds the port.)
RUNBOOK_UNIT = """[Unit]
Description=Payment Service

[Service]
User=root
WorkingDirectory=/tmp
ExecStart=/usr/bin/python3 -m http.server {port}
ExecStop=/bin/kill -9 $MAINPID
SyslogIdentifier=payment

[Install]
WantedBy=multi-user.target
"""


def test_upgrade_from_a_unit_that_binds_the_port(payment, stubs):
    """A host set up by hand from the runbooks: the play takes the port over for the socket."""
    payment.check_output("systemctl disable --now payment.socket payment.service")
    payment.check_output("rm -f /etc/systemd/system/payment.socket")
    unit = RUNBOOK_UNIT.format(port=lib.PAYMENT_PORT)
    payment.check_output("printf '%%s' %s > /etc/systemd/system/payment.service", unit)
    payment.check_output("systemctl daemon-reload && systemctl enable --now payment.service")
    assert lib.wait_for(
        lambda: lib.http(payment, "GET", f"http://localhost:{lib.PAYMENT_PORT}/")[0] == 200,
        timeout=30,
    )
    assert payment.check_output("systemctl show -p User --value payment.service") == "root"

    run = lib.run_playbook("site.yml")
    assert run.rc == 0, "the deploy over the hand-made unit failed (output above)"
    assert payment.service("payment.socket").is_running
    assert payment.service("payment.socket").is_enabled
    assert payment.check_output("systemctl show -p User --value payment.service") == "roboshop"
    assert lib.wait_for(lambda: lib.http(payment, "GET", HEALTH)[0] == 200, timeout=60)
    code, text, _ = lib.pay(payment, stubs)
    assert code == 200, text
    assert (
        lib.take_order(PAYMENT, json.loads(text)["orderid"], timeout=60)["routing_key"] == "orders"
    )


def _authenticates(rabbitmq, user: str, password: str) -> bool:
    # the password on stdin, as the role checks it
    check = rabbitmq.run("printf '%%s' %s | rabbitmqctl -q authenticate_user %s", password, user)
    return check.rc == 0


def test_password_rotation_and_permission_drift(payment, rabbitmq, stubs):
    """A new vault password reaches the broker and the service; permissions changed by hand
    on the broker are put back. The role's quick user check must see both."""
    user = lib.lab_vars().get("roboshop_amqp_user", "roboshop")  # group_vars/all.yml's default
    old = lib.lab_vars()["vault_roboshop_amqp_password"]
    new = "rotated-lab-password-2026"
    rabbitmq.check_output("rabbitmqctl -q set_permissions -p / %s '^$' '^$' '^$'", user)
    try:
        run = lib.run_playbook("site.yml", "-e", f"vault_roboshop_amqp_password={new}")
        assert run.rc == 0, "the deploy with a rotated password failed (output above)"
        assert new not in run.output
        assert _authenticates(rabbitmq, user, new), "the broker kept the old password"
        assert not _authenticates(rabbitmq, user, old)
        perms = rabbitmq.check_output(
            "rabbitmqctl -q --no-table-headers list_user_permissions %s", user
        )
        assert perms.split() == [
            "/",
            "^(robot-shop|orders)$",
            "^(robot-shop|orders)$",
            "^robot-shop$",
        ], perms
        lib.pays_and_queues(payment, stubs, PAYMENT)
    finally:
        back = lib.run_playbook("site.yml")
    assert back.rc == 0, "the deploy back to the lab password failed (output above)"
    assert _authenticates(rabbitmq, user, old)
    assert lib.wait_for(lambda: lib.http(payment, "GET", HEALTH)[0] == 200, timeout=60)


ARTIFACT_DIR = "/srv/artifacts"
ARTIFACT_PORT = 8090


@pytest.fixture
def artifact_server(stubs, tmp_path: Path):
    """The service as the runbooks ship it: payment.zip with the files at its top level
    (requirements.txt, payment.ini, the package), on a plain HTTP server on the stubs host.
    Yields (url, sha256); the release built from it carries a marker file."""
    marker = f"zip-{tmp_path.name}"
    zip_path = tmp_path / "payment.zip"
    with zipfile.ZipFile(zip_path, "w") as zf:
        for f in sorted(lib.SERVICE_SRC.rglob("*")):
            rel = f.relative_to(lib.SERVICE_SRC)
            if f.is_file() and not {"tests", "bench", "__pycache__"} & set(rel.parts):
                zf.write(f, rel)
        zf.writestr("ARTIFACT", marker)
    subprocess.run(["podman", "exec", "fail-stubs", "mkdir", "-p", ARTIFACT_DIR], check=True)
    subprocess.run(["podman", "cp", str(zip_path), f"fail-stubs:{ARTIFACT_DIR}/"], check=True)
    stubs.check_output(
        "systemd-run --unit artifact-http python3 -m http.server %s --directory %s",
        str(ARTIFACT_PORT), ARTIFACT_DIR,
    )  # fmt: skip
    sha = hashlib.sha256(zip_path.read_bytes()).hexdigest()
    try:
        yield f"http://stubs:{ARTIFACT_PORT}/payment.zip", sha, marker
    finally:
        stubs.run("systemctl stop artifact-http")


def test_release_from_the_runbooks_zip_artifact(payment, stubs, artifact_server):
    """payment_artifact_url + payment_artifact_checksum: a wrong checksum changes nothing;
    the right one deploys the zip's service over SSH, and it takes a payment."""
    url, sha, marker = artifact_server
    before = lib.current_release(payment)
    try:
        wrong = {"payment_artifact_url": url, "payment_artifact_checksum": "sha256:" + "0" * 64}
        bad = lib.run_playbook("site.yml", "-e", json.dumps(wrong))
        assert bad.rc != 0, "a zip whose checksum does not match was deployed"
        assert lib.current_release(payment) == before

        right = {"payment_artifact_url": url, "payment_artifact_checksum": f"sha256:{sha}"}
        run = lib.run_playbook("site.yml", "-e", json.dumps(right))
        assert run.rc == 0, "the deploy of the zip artifact failed (output above)"
        release = lib.current_release(payment)
        assert release != before
        assert payment.file(f"{release}/ARTIFACT").content_string == marker
        lib.pays_and_queues(payment, stubs, PAYMENT)
    finally:
        back = lib.run_playbook("site.yml")
    assert back.rc == 0, "the deploy back to service_src failed (output above)"
