"""Fixtures for the default scenario: one testinfra host per test host, through podman.

testinfra's podman backend runs each command with one `podman exec`; molecule's default
(the Ansible backend) would start Ansible for every command.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import testinfra
import yaml

PROJECT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(PROJECT / "testing/molecule_support"))

import roboshop_testlib  # noqa: E402

LAB_VARS = PROJECT / "inventory/lab/group_vars/all"
QUEUE_GET = PROJECT / "testing/tools/queue_get.py"
# Other scenarios (rocky9, rocky8) run these tests against their own containers.
PREFIX = os.environ.get("ROBOSHOP_HOST_PREFIX", "")


@pytest.fixture(scope="session")
def lab_vars() -> dict:
    """The inventory values the scenario converged with (what the hosts must show)."""
    merged: dict = {}
    for path in sorted(LAB_VARS.glob("*.yml")):
        merged.update(yaml.safe_load(path.read_text()) or {})
    return merged


def _host(name: str):
    return testinfra.get_host(f"podman://{PREFIX}{name}")


@pytest.fixture(scope="session")
def payment():
    return _host("payment")


@pytest.fixture(scope="session")
def rabbitmq():
    return _host("rabbitmq")


@pytest.fixture(scope="session")
def stubs():
    return _host("stubs")


def http(host, method: str, url: str, body: object | None = None) -> tuple[int, str]:
    """Make an HTTP request from inside `host` (its python3; no curl needed)."""
    script = (
        "import json,sys,urllib.request,urllib.error\n"
        "m,u,b=sys.argv[1],sys.argv[2],sys.argv[3]\n"
        "d=b.encode() if b else None\n"
        "r=urllib.request.Request(u,data=d,method=m,"
        "headers={'Content-Type':'application/json'} if d else {})\n"
        "try:\n"
        "    resp=urllib.request.urlopen(r,timeout=15); code=resp.status; text=resp.read()\n"
        "except urllib.error.HTTPError as e:\n"
        "    code=e.code; text=e.read()\n"
        "print(code); sys.stdout.write(text.decode())\n"
    )
    payload = "" if body is None else json.dumps(body)
    out = host.check_output("python3 -c %s %s %s %s", script, method, url, payload)
    code, _, text = out.partition("\n")
    return int(code), text


@pytest.fixture()
def take_order(payment):
    """Take an order from the `orders` queue by orderid, with the release's pika."""
    dest = f"/tmp/queue_get_{uuid.uuid4().hex}.py"
    subprocess.run(["podman", "cp", str(QUEUE_GET), f"{PREFIX}payment:{dest}"], check=True)

    def take(orderid: str) -> dict:
        # as the lab's orders reader (dispatch): payment's own user may not read `orders`
        out = subprocess.run(
            ["podman", "exec", *roboshop_testlib.QUEUE_READER, f"{PREFIX}payment",
             "/app/current/venv/bin/python", dest, orderid, "--timeout", "15"],
            capture_output=True, text=True, check=False, timeout=120,
            env=roboshop_testlib.queue_reader_env(),
        )  # fmt: skip
        assert out.returncode == 0, out.stdout + out.stderr
        return json.loads(out.stdout)

    yield take
    payment.run("rm -f %s", dest)


def pytest_terminal_summary(terminalreporter):
    roboshop_testlib.report_verify_duration(terminalreporter)
