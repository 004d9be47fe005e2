"""A rolling deploy of a changed release while a client keeps paying: no payment fails, and
every paid order is in the `orders` queue exactly once."""

from __future__ import annotations

import collections
import json
import subprocess
import time

import roboshop_testlib as lib
from conftest import PAYMENT_HOSTS

STUBS = "roll-stubs"
STOP_FILE = "/tmp/pay_client.stop"


def start_client() -> subprocess.Popen:
    cart_port = lib.lab_vars()["roboshop_cart_port"]
    targets = [arg for h in PAYMENT_HOSTS for arg in ("--target", f"{h}:{lib.PAYMENT_PORT}")]
    return lib.start_client(
        STUBS, "pay_client.py", *targets, "--cart-url", f"http://localhost:{cart_port}",
        "--stop-file", STOP_FILE, "--workers", "2", "--pause", "0.05",
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
    # Start from an empty queue, so that afterwards it holds exactly this test's orders.
    lib.drain_orders(first, settle=1)

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

    ok, failures = summary["ok"], summary["failures"]
    during = [o for o in ok if t_deploy <= o["t"] <= t_deployed]
    print(
        f"\nclient: {summary['attempts']} payments, {len(ok)} ok, {len(failures)} failed, "
        f"{summary['refused_retries']} refused-and-retried; by host {summary['by_target']}; "
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
    assert {o["target"].split(":")[0] for o in during} == set(PAYMENT_HOSTS), summary["by_target"]
    assert len(during) >= 20, f"only {len(during)} payments during the deploy"

    # Every 200 is in the queue exactly once (an order kept in a host's outbox is delivered
    # first), and the queue holds nothing else. All problems are reported together.
    problems = []
    if failures:
        problems.append(f"{len(failures)} failed payments, e.g. {failures[:5]}")
    for name, h in payments.items():
        if not lib.wait_for(lambda h=h: lib.outbox_pending(h) == 0, timeout=90):
            problems.append(f"{name}: orders left in the outbox")
    queued = collections.Counter(m["orderid"] for m in lib.drain_orders(first))
    paid = collections.Counter(o["orderid"] for o in ok)
    print(f"queue: {sum(queued.values())} messages, {len(queued)} distinct orders")
    if len(paid) != len(ok):
        problems.append("the service gave the same orderid twice")
    duplicates = {k: n for k, n in queued.items() if n > 1}
    if duplicates:
        problems.append(f"orders queued more than once: {list(duplicates.items())[:5]}")
    problems += lib.order_problems(set(paid), set(queued))
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
