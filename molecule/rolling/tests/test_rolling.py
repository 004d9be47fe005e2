"""A rolling deploy of a changed release while a careful client keeps paying on both hosts
(no load balancer: the client rotates over them): no payment fails, no key is charged twice,
and every paid order is in the `orders` queue exactly once.

The client is testing/tools/careful_client.py: a key per payment, retried with that key until
it has a final answer. A host's HTTP router closes, unanswered and unprocessed, the
connections that arrive in the second of its graceful stop (service_src/README.md, "Slow
clients"); a client that retries with its key loses nothing, and the retries must all fall
within the deploy."""

from __future__ import annotations

import json
import subprocess
import time

import roboshop_testlib as lib
from conftest import PAYMENT_HOSTS

STUBS = "roll-stubs"
STOP_FILE = "/tmp/careful_client.stop"


def start_client() -> subprocess.Popen:
    cart_port = lib.lab_vars()["roboshop_cart_port"]
    targets = [arg for h in PAYMENT_HOSTS for arg in ("--target", f"{h}:{lib.PAYMENT_PORT}")]
    return lib.start_client(
        STUBS, "careful_client.py", *targets, "--cart-url", f"http://localhost:{cart_port}",
        "--stop-file", STOP_FILE, "--workers", "2", "--pause", "0.05", "--give-up", "90",
    )  # fmt: skip


def stop_client(client: subprocess.Popen) -> dict:
    return lib.stop_client(STUBS, client, STOP_FILE)


def test_rolling_deploy_under_load(payments, stubs):
    first = PAYMENT_HOSTS[0]
    for name, h in payments.items():
        code, text = lib.http(h, "GET", f"http://localhost:{lib.PAYMENT_PORT}/health")
        assert code == 200, f"{name} not ready before the roll: {text}"
    before = {name: lib.current_release(h) for name, h in payments.items()}
    pids_before = {name: lib.main_pid(h) for name, h in payments.items()}
    # Start from an empty queue and no gateway calls, so that afterwards both hold exactly
    # this test's payments.
    lib.drain_orders(first, settle=1)
    lib.gateway_calls(stubs, "DELETE")

    with lib.release_copy("rolling") as src:
        client = start_client()
        try:
            time.sleep(3)  # paying on both hosts before the roll starts
            t_deploy = time.time()
            run = lib.run_playbook("site.yml", "-e", f"payment_source_dir={src}")
            t_deployed = time.time()
            time.sleep(3)  # and after it
        finally:
            summary = stop_client(client)

    ok = summary["ok"]
    during = [o for o in ok if t_deploy <= o["t"] <= t_deployed]
    retried = [o for o in ok if o["attempts"] > 1]
    by_host = {h: sum(o["target"].startswith(h) for o in ok) for h in PAYMENT_HOSTS}
    print(
        f"\nclient: {summary['payments']} payments, {len(ok)} ok, "
        f"{len(summary['failures'])} failed, {len(retried)} retried with their key "
        f"(statuses {summary['statuses']}); by host {by_host}; "
        f"{len(during)} ok during the {t_deployed - t_deploy:.0f} s deploy"
    )
    assert run.rc == 0, "the rolling deploy failed (output above)"

    # The roll really happened: a new release, the same on both hosts, each restarted.
    after = {name: lib.current_release(h) for name, h in payments.items()}
    pids_after = {name: lib.main_pid(h) for name, h in payments.items()}
    for name in PAYMENT_HOSTS:
        assert after[name] != before[name], f"{name} still runs {before[name]}"
        assert pids_after[name] != pids_before[name], f"{name} was not restarted"
    assert len(set(after.values())) == 1, after
    assert payments[first].file(f"{after[first]}/RELEASE").content_string.startswith("rolling ")

    # The load was real, on both hosts, during the roll.
    assert {o["target"].split(":")[0] for o in during} == set(PAYMENT_HOSTS), by_host
    assert len(during) >= 20, f"only {len(during)} payments during the deploy"

    # Every payment ended in a 200, charged once; every 200 is in the queue exactly once (an
    # order kept in a host's outbox is delivered first), and the queue holds nothing else. A
    # retry is only ever needed while a host restarts. All problems are reported together.
    problems = []
    for name, h in payments.items():
        if not lib.wait_for(lambda h=h: lib.outbox_pending(h) == 0, timeout=90):
            problems.append(f"{name}: orders left in the outbox")
    result = lib.count_payments(summary, lib.charges_by_key(stubs), lib.drain_orders(first))
    print(result.line("rolling deploy"))
    problems += result.problems
    if result.failed:
        problems.append(f"{result.failed} failed payments, e.g. {summary['failures'][:5]}")
    if result.duplicates:
        problems.append(f"{result.duplicates} orders queued more than once")
    outside = [o for o in retried if not t_deploy <= o["t"] <= t_deployed]
    if outside:
        problems.append(f"{len(outside)} payments needed a retry outside the deploy: {outside[:5]}")
    assert not problems, "\n".join(problems)


# What a stopped roll must leave alone on a host: its releases, its unit and its process.
UNTOUCHED = (
    "find /app /etc/roboshop /etc/systemd/system -xdev -printf '%p %y %m %s %T@ %l\\n' | sort; "
    "systemctl show --property=MainPID,ExecMainStartTimestamp payment.service"
)


def test_bad_release_stops_after_the_first_host(payments, stubs):
    """serial + max_fail_percentage 0: a release that cannot start is rolled back on the
    first host and never reaches the second, which keeps serving the release it had."""
    before = {name: lib.current_release(h) for name, h in payments.items()}
    fingerprint = {name: h.run(UNTOUCHED).stdout for name, h in payments.items()}
    with lib.release_copy("broken", lib.break_app) as src:
        run = lib.run_playbook("site.yml", "-e", f"payment_source_dir={src}")
    assert run.rc != 0, "the play did not fail"
    tried = [name for name in PAYMENT_HOSTS if f"did not become live on {name}" in run.output]
    assert len(tried) == 1, f"the broken release was tried on {tried or 'no host'}"
    canary = tried[0]
    (other,) = (name for name in PAYMENT_HOSTS if name != canary)
    print(f"\nbroken release: tried on {canary}, rolled back; {other} not touched")
    assert f"ROLLED BACK: /app/current -> {before[canary]} again" in run.output
    assert lib.current_release(payments[canary]) == before[canary]
    assert payments[other].run(UNTOUCHED).stdout == fingerprint[other], (
        f"{other} changed although the roll should have stopped at {canary}"
    )
    for name, h in payments.items():
        code, text, _ = lib.pay(h, stubs)
        assert code == 200, f"{name} does not take payments after the stopped roll: {text}"
        lib.take_order(name, json.loads(text)["orderid"], timeout=60)


def test_hosts_that_install_wheels_get_no_compiler(payments, stubs):
    """The wheels are built once (by the first host that lacks them, or they come from the
    controller's cache) and shipped: the second batch's host only installs them, so it gets
    neither gcc nor the Python headers, and the uWSGI built elsewhere runs there."""
    second = payments[PAYMENT_HOSTS[1]]
    for package in ("gcc", "python3-dev"):
        assert not second.package(package).is_installed, f"{package} on {PAYMENT_HOSTS[1]}"
    uwsgi = second.run("/app/current/venv/bin/uwsgi --version")
    assert uwsgi.rc == 0, uwsgi.stderr
    code, text, _ = lib.pay(second, stubs)
    assert code == 200, text
    lib.take_order(PAYMENT_HOSTS[1], json.loads(text)["orderid"], timeout=60)
