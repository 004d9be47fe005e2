"""The deploy's gate, proven on the hosts: a restart is never lost, a change that breaks a
ready host is rolled back (files and release alike), and the checks go to the address the
socket listens on. Each runs the real ansible-playbook against the converged hosts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import roboshop_testlib as lib
import yaml

PAYMENT = "fail-payment"
HEALTH = f"http://localhost:{lib.PAYMENT_PORT}/health"
ENV_FILE = "/etc/roboshop/payment.env"
UNIT_FILE = "/etc/systemd/system/payment.service"
SOCKET_FILE = "/etc/systemd/system/payment.socket"
MARK = "ROBOSHOP_DEPLOY_MARK"
# this scenario's own payment_extra_env (an -e override replaces the whole dict)
HOST_EXTRA_ENV = yaml.safe_load(
    (Path(__file__).resolve().parents[1] / "host_vars/fail-payment.yml").read_text()
)["payment_extra_env"]


def config_sums(payment) -> str:
    return payment.check_output("sha256sum %s %s %s", ENV_FILE, UNIT_FILE, SOCKET_FILE)


def leftover_copies(payment) -> list[str]:
    """The previous copies the role keeps until its gate has passed (<file>.<pid>.<date>~)."""
    found = payment.run("ls -1d %s.*~ %s.*~ %s.*~", ENV_FILE, UNIT_FILE, SOCKET_FILE)
    return found.stdout.split()


def deploy(*extra: str) -> lib.PlaybookRun:
    return lib.run_playbook("playbooks/payment.yml", *extra)


def test_a_restart_left_pending_by_a_failed_run_is_made_by_the_next(payment, stubs):
    """A run writes the secrets file, then fails before its restart (a load balancer that
    does not answer): the next run, which has nothing left to write, still restarts.
    (uWSGI rewrites its own environ for its process titles, so the proof is the restart: a
    process started after the failed run got the file that run wrote; systemd reads
    EnvironmentFile= at each start.)"""
    pid = lib.main_pid(payment)
    marked = {"payment_secret_env": {MARK: "pending-restart"}}
    try:
        failed = deploy("-e", json.dumps({**marked, "payment_lb_hosts": ["fail-stubs"]}))
        assert failed.rc != 0, "the run with an unreachable load balancer did not fail"
        assert "Read this host's state in each load balancer" in failed.output
        assert payment.run("grep -q %s %s", MARK, ENV_FILE).rc == 0, "the file was not written"
        assert lib.main_pid(payment) == pid, "the failed run restarted payment"

        run = deploy("-e", json.dumps(marked))
        assert run.rc == 0, "the next run failed (output above)"
        assert lib.main_pid(payment) != pid, (
            "the next run did not restart payment: it still runs with the old secrets file"
        )
        assert "started before its files last changed" in run.output
        assert leftover_copies(payment) == [], "the previous copies were not removed"
        lib.pays_and_queues(payment, stubs, PAYMENT)

        again = deploy("-e", json.dumps(marked))
        assert again.rc == 0
        assert again.changed() == 0, f"a run after the restart changed something: {again.recap()}"
    finally:
        back = deploy()
    assert back.rc == 0, "the run back to the lab's settings failed (output above)"
    assert payment.run("grep -q %s %s", MARK, ENV_FILE).rc != 0


# A config-only change (no new release) that breaks the host -> the words of the failure and
# the file that must be put back.
BREAKING_CHANGES = {
    # the service refuses the setting and never starts
    "not-live": (  # 15 x 2 s for liveness (default 30 x 2): it never comes, the restored one does
        {
            "payment_extra_env": {**HOST_EXTRA_ENV, "PAYMENT_MAX_BODY": "12"},
            "payment_health_retries": 15,
        },
        f"did not become live on {PAYMENT}",
        UNIT_FILE,
        "PAYMENT_MAX_BODY must be between 1024 and",
    ),
    # it starts, but the broker refuses the password: /health 503 where it was 200
    "not-ready": (
        {"payment_amqp_password": "not-the-broker-password"},
        f"was ready on {PAYMENT} before the restart and is",
        ENV_FILE,
        '"rabbitmq": "disconnected"',
    ),
}


@pytest.mark.parametrize("case", sorted(BREAKING_CHANGES))
def test_a_config_change_that_breaks_the_host_is_rolled_back(case, payment, stubs):
    extra, failure, restored, cause = BREAKING_CHANGES[case]
    assert lib.wait_for(lambda: lib.http(payment, "GET", HEALTH)[0] == 200, timeout=60)
    release = lib.current_release(payment)
    before = config_sums(payment)

    run = deploy("-e", json.dumps(extra))
    assert run.rc != 0, "a change that breaks the host was deployed"
    assert failure in run.output, "the failure message does not say what broke"
    assert f"ROLLED BACK: {restored} again, and it is live." in run.output
    assert cause in run.output, "the failure message does not show the cause"
    assert "not-the-broker-password" not in run.output
    assert config_sums(payment) == before, "the files were not put back"
    assert leftover_copies(payment) == []
    assert lib.current_release(payment) == release
    lib.pays_and_queues(payment, stubs, PAYMENT)
    # Nothing is left pending: the next run changes nothing.
    again = deploy()
    assert again.rc == 0
    assert again.changed() == 0, f"the run after the rollback changed something: {again.recap()}"


def test_checks_go_to_the_address_the_socket_listens_on(payment, stubs):
    """payment_bind_address = the host's private address: the gate must probe that address,
    not 127.0.0.1 (where nothing listens any more)."""
    address = payment.check_output("hostname -I").split()[0]
    try:
        run = deploy("-e", f"payment_bind_address={address}")
        assert run.rc == 0, "the deploy on a private address failed (output above)"
        listen = payment.check_output("systemctl show --property=Listen --value payment.socket")
        assert listen.startswith(f"{address}:{lib.PAYMENT_PORT} "), listen
        url = f"http://{address}:{lib.PAYMENT_PORT}/health"
        assert lib.http(payment, "GET", url)[0] == 200
        assert lib.http(payment, "GET", HEALTH)[0] == 0, "payment still listens on loopback"
    finally:
        back = deploy()
    assert back.rc == 0, "the deploy back to every address failed (output above)"
    listen = payment.check_output("systemctl show --property=Listen --value payment.socket")
    assert listen.startswith(f"0.0.0.0:{lib.PAYMENT_PORT} "), listen
    lib.pays_and_queues(payment, stubs, PAYMENT)


BREAK_DROPIN = "/etc/systemd/system/payment.service.d/zz-test-cannot-start.conf"


def test_a_rollback_that_does_not_come_back_still_reports(payment, stubs):
    """The previous files cannot start either (here a drop-in no run of the role wrote,
    standing for a broken host): the rollback's liveness wait runs out, and the rescue still
    ends with its own message naming what it put back, and the journal."""
    marked = {"payment_secret_env": {MARK: "rollback-not-live"}, "payment_health_retries": 3}
    before = config_sums(payment)
    payment.run("mkdir -p %s", BREAK_DROPIN.rsplit("/", 1)[0])
    payment.run("printf '[Service]\\nExecStartPre=/bin/false\\n' > %s", BREAK_DROPIN)
    try:
        run = deploy("-e", json.dumps(marked))
        assert run.rc != 0, "a host that cannot start was deployed"
        assert f"did not become live on {PAYMENT}" in run.output, run.output[-3000:]
        assert f"ROLLED BACK: {ENV_FILE}, but it is not live either: look at the host now." in (
            run.output
        ), "the rescue stopped before its message"
        assert "journal lines of payment.service" in run.output
        assert config_sums(payment) == before, "the secrets file was not put back"
        assert leftover_copies(payment) == []
    finally:
        payment.run("rm -f %s", BREAK_DROPIN)
        # the repair an operator would make: the start limit the failed starts hit is cleared
        payment.run(
            "systemctl daemon-reload && systemctl reset-failed payment.service payment.socket"
        )
        back = deploy()
    assert back.rc == 0, "the run after the host was repaired failed (output above)"
    lib.pays_and_queues(payment, stubs, PAYMENT)
