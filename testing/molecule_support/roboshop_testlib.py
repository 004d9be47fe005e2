"""Helpers shared by the molecule scenarios' testinfra tests (imported as a module: the
project's pytest.ini puts this directory on pytest's pythonpath).

Hosts are reached through testinfra's podman backend (one `podman exec` per command), never
through molecule's Ansible backend. Tests that deploy call the real `ansible-playbook` with the
project's ansible.cfg and the scenario's molecule inventory (or a copy with changed values).
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import testinfra
import yaml

PROJECT = Path(__file__).resolve().parents[2]
LAB_VARS = PROJECT / "inventory/lab/group_vars/all"
SERVICE_SRC = PROJECT / "service_src"
TOOLS = PROJECT / "testing/tools"
TOOLS_ON_HOST = "/tmp/roboshop-tools"
PAYMENT_PORT = 8080

_VERIFY_T0 = time.monotonic()


# -- hosts ------------------------------------------------------------------------------------
def host(container: str):
    """A testinfra host for a podman container (one `podman exec` per command)."""
    return testinfra.get_host(f"podman://{container}")


def lab_vars() -> dict:
    """The inventory values the scenarios converge with (inventory/lab/group_vars/all)."""
    merged: dict = {}
    for path in sorted(LAB_VARS.glob("*.yml")):
        merged.update(yaml.safe_load(path.read_text()) or {})
    return merged


def http(
    on_host,
    method: str,
    url: str,
    body: object | None = None,
    timeout: float = 15,
    headers: dict[str, str] | None = None,
) -> tuple[int, str]:
    """An HTTP request made from inside `on_host` with its python3 (no curl in the image).
    Status 0 means no HTTP answer (refused, reset, timeout); the text says why."""
    script = (
        "import json,sys,urllib.request,urllib.error\n"
        "m,u,b,t,h=sys.argv[1],sys.argv[2],sys.argv[3],float(sys.argv[4]),json.loads(sys.argv[5])\n"
        "d=b.encode() if b else None\n"
        "r=urllib.request.Request(u,data=d,method=m,"
        "headers={**({'Content-Type':'application/json'} if d else {}),**h})\n"
        "try:\n"
        "    resp=urllib.request.urlopen(r,timeout=t); code=resp.status; text=resp.read()\n"
        "except urllib.error.HTTPError as e:\n"
        "    code=e.code; text=e.read()\n"
        "except Exception as e:\n"
        "    code=0; text=repr(e).encode()\n"
        "print(code); sys.stdout.write(text.decode())\n"
    )
    payload = "" if body is None else json.dumps(body)
    out = on_host.check_output(
        "python3 -c %s %s %s %s %s %s",
        script, method, url, payload, str(timeout), json.dumps(headers or {}),
    )  # fmt: skip
    code, _, text = out.partition("\n")
    return int(code), text


def queue_reader_env() -> dict[str, str]:
    """The environment that makes queue_get.py/queue_drain.py log in as the lab's orders
    reader (`dispatch`, roboshop_amqp_users): payment itself may not read `orders`. Passed
    with `podman exec -e NAME` (the value from this environment, not on a command line)."""
    v = lab_vars()
    reader = next(u for u in v["roboshop_amqp_users"] if u["name"] == "dispatch")
    assert "vault_roboshop_dispatch_amqp_password" in reader["password"]
    return {
        **os.environ,
        "QUEUE_AMQP_USER": reader["name"],
        "QUEUE_AMQP_PASS": v["vault_roboshop_dispatch_amqp_password"],
    }


QUEUE_READER = ["-e", "QUEUE_AMQP_USER", "-e", "QUEUE_AMQP_PASS"]


def copy_tools(container: str) -> str:
    """Copy testing/tools/*.py to TOOLS_ON_HOST on the container; returns that directory."""
    subprocess.run(["podman", "exec", container, "mkdir", "-p", TOOLS_ON_HOST], check=True)
    for tool in sorted(TOOLS.glob("*.py")):
        subprocess.run(
            ["podman", "cp", str(tool), f"{container}:{TOOLS_ON_HOST}/{tool.name}"], check=True
        )
    return TOOLS_ON_HOST


def start_client(container: str, tool: str, *args: str) -> subprocess.Popen:
    """Start a paying client (testing/tools/<tool>) on `container`; returns once it printed
    READY (its first payment has ended). It pays until `stop_client`."""
    tools = copy_tools(container)
    client = subprocess.Popen(
        ["podman", "exec", container, "python3", f"{tools}/{tool}", *args],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert client.stdout is not None
    assert client.stdout.readline().strip() == "READY"
    return client


def stop_client(container: str, client: subprocess.Popen, stop_file: str) -> dict:
    """Ask the client to stop (its --stop-file) and return its JSON summary."""
    subprocess.run(["podman", "exec", container, "touch", stop_file], check=True)
    out, _ = client.communicate(timeout=300)
    assert client.returncode == 0, out
    return json.loads(out.strip().splitlines()[-1])


def main_pid(on_host, unit: str = "payment.service") -> int:
    return int(on_host.check_output("systemctl show --property=MainPID --value %s", unit))


def current_release(on_host) -> str:
    return on_host.check_output("readlink /app/current")


def outbox_pending(on_host) -> int:
    """Charged orders on the host not yet confirmed by RabbitMQ: payment records in state
    `charged` (payments.sqlite3), plus rows of the former outbox (outbox.sqlite3, releases
    before the payment records; a new release imports them at start)."""
    script = (
        "import os,sqlite3\n"
        "n=0\n"
        "for p,q in (('/var/lib/payment/payments.sqlite3',"
        "\"select count(*) from payments where state='charged'\"),"
        "('/var/lib/payment/outbox.sqlite3','select count(*) from outbox')):\n"
        "    if os.path.exists(p):\n"
        "        try: n+=sqlite3.connect(p).execute(q).fetchone()[0]\n"
        "        except sqlite3.OperationalError: pass\n"
        "print(n)\n"
    )
    return int(on_host.check_output("python3 -c %s", script))


def wait_for(predicate: Callable[[], Any], timeout: float, interval: float = 1.0) -> Any:
    """Poll until predicate() is truthy; returns its last value (falsy on timeout)."""
    deadline = time.monotonic() + timeout
    value = predicate()
    while not value and time.monotonic() < deadline:
        time.sleep(interval)
        value = predicate()
    return value


def drain_orders(container: str, settle: float = 3.0) -> list[dict]:
    """Take every message from the `orders` queue (ack) with the release's pika, on a payment
    host; waits until the queue stays empty for `settle` seconds."""
    tools = copy_tools(container)
    out = subprocess.run(
        ["podman", "exec", *QUEUE_READER, container, "/app/current/venv/bin/python",
         f"{tools}/queue_drain.py", "--settle", str(settle)],
        capture_output=True, text=True, check=False, timeout=300, env=queue_reader_env(),
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    return json.loads(out.stdout)["orders"]


def take_order(container: str, orderid: str, timeout: float = 15) -> dict:
    """Take one order by orderid from the `orders` queue (testing/tools/queue_get.py)."""
    tools = copy_tools(container)
    out = subprocess.run(
        ["podman", "exec", *QUEUE_READER, container, "/app/current/venv/bin/python",
         f"{tools}/queue_get.py", orderid, "--timeout", str(timeout)],
        capture_output=True, text=True, check=False, timeout=timeout + 60,
        env=queue_reader_env(),
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    return json.loads(out.stdout)


def order_problems(paid: set[str], queued: set[str]) -> list[str]:
    """Every paid order (a 200's orderid) in the queue, and nothing else there."""
    problems = []
    missing = paid - queued
    if missing:
        problems.append(f"{len(missing)} paid orders not in the queue, e.g. {sorted(missing)[:5]}")
    extra = queued - paid
    if extra:
        # e.g. a payment whose answer was lost in a reset: charged and queued, client told 5xx
        problems.append(f"{len(extra)} queued orders the client got no 200 for")
    return problems


# -- a careful client's payments, counted (testing/tools/careful_client.py) -----------------
GATEWAY = "http://localhost:8082"  # the payment gateway stub, on the stubs host


def gateway_calls(stubs_host, method: str = "GET") -> list[dict]:
    """The gateway stub's list of calls (GET), or that list emptied (DELETE)."""
    code, text = http(stubs_host, method, f"{GATEWAY}/_calls")
    assert code == 200, text
    return json.loads(text) if method == "GET" else []


def charges_by_key(stubs_host) -> collections.Counter[str]:
    """Gateway calls per Idempotency-Key (the careful client's request ids are KEY.ATTEMPT)."""
    charges: collections.Counter[str] = collections.Counter()
    for call in gateway_calls(stubs_host):
        rid = call["headers"].get("x-request-id", "")
        if "." in rid:
            charges[rid.rsplit(".", 1)[0]] += 1
    return charges


@dataclass
class Count:
    payments: int
    ok: int
    failed: int
    retried: int
    orders: int
    duplicates: int
    problems: list[str]

    def line(self, phase: str) -> str:
        return (
            f"{phase}: {self.payments} payments, {self.ok} x 200, {self.failed} failed, "
            f"{self.retried} retried with their key; queue: {self.orders} distinct orders, "
            f"{self.duplicates} duplicates by message_id"
        )


def count_payments(summary: dict, charges: collections.Counter[str], queued: list[dict]) -> Count:
    """A careful client's summary against the gateway's charges and the queue: every 200
    charged exactly once, no key charged twice, every 200's order queued and nothing else."""
    ok = summary["ok"]
    problems = []
    by_order = collections.Counter(m["orderid"] for m in queued)
    paid = {o["orderid"]: o["key"] for o in ok}
    if len(paid) != len(ok):
        problems.append("the service gave the same orderid to two payments")
    twice = {k: n for k, n in charges.items() if n > 1}
    if twice:
        problems.append(f"{len(twice)} keys charged more than once: {list(twice.items())[:5]}")
    uncharged = [o["key"] for o in ok if charges[o["key"]] != 1]
    if uncharged:
        problems.append(f"{len(uncharged)} 200s without exactly one charge: {uncharged[:5]}")
    problems += order_problems(set(paid), set(by_order))
    ids = collections.Counter(m["message_id"] for m in queued)
    if any(m["message_id"] != m["orderid"] for m in queued):
        problems.append("a message whose message_id is not its orderid")
    return Count(
        payments=summary["payments"],
        ok=len(ok),
        failed=len(summary["failures"]),
        retried=summary["retried_payments"],
        orders=len(by_order),
        duplicates=sum(n - 1 for n in ids.values()),
        problems=problems,
    )


def fetch_cart(stubs_host, user: str) -> dict:
    v = lab_vars()
    code, text = http(stubs_host, "GET", f"http://localhost:{v['roboshop_cart_port']}/cart/{user}")
    assert code == 200, text
    return json.loads(text)


def pay(payment_host, stubs_host, user: str | None = None) -> tuple[int, str, str]:
    """One real payment on `payment_host` for a fresh anonymous cart: (status, body, user)."""
    user = user or f"anonymous-{uuid.uuid4().hex[:12]}"
    cart = fetch_cart(stubs_host, user)
    code, text = http(
        payment_host, "POST", f"http://localhost:{PAYMENT_PORT}/pay/{user}", cart, timeout=30
    )
    return code, text, user


def pays_and_queues(payment_host, stubs_host, container: str, ready_timeout: float = 60) -> dict:
    """The host becomes ready, takes a real payment (200) and its order is in the queue;
    returns that order."""
    health = f"http://localhost:{PAYMENT_PORT}/health"
    assert wait_for(lambda: http(payment_host, "GET", health)[0] == 200, timeout=ready_timeout)
    code, text, _ = pay(payment_host, stubs_host)
    assert code == 200, text
    return take_order(container, json.loads(text)["orderid"], timeout=60)


# -- ansible-playbook -------------------------------------------------------------------------
@dataclass
class PlaybookRun:
    args: list[str]
    rc: int
    output: str
    seconds: float

    def recap(self) -> dict[str, dict[str, int]]:
        """PLAY RECAP counters per host."""
        return parse_recap(self.output)

    def changed(self) -> int:
        return sum(c.get("changed", 0) for c in self.recap().values())


RECAP_LINE = re.compile(r"^(\S+)\s+:\s+((?:\w+=\d+\s*)+)$")


def parse_recap(output: str) -> dict[str, dict[str, int]]:
    recap: dict[str, dict[str, int]] = {}
    in_recap = False
    for line in output.splitlines():
        if line.startswith("PLAY RECAP"):
            in_recap = True
            continue
        if in_recap:
            match = RECAP_LINE.match(line.strip())
            if match:
                recap[match.group(1)] = {
                    k: int(v) for k, v in (kv.split("=") for kv in match.group(2).split())
                }
            elif line.strip():
                in_recap = False
    return recap


def molecule_inventory() -> Path:
    """The inventory molecule wrote for this scenario (hosts + linked group_vars/host_vars)."""
    return Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "inventory"


_FACTS = Path(tempfile.mkdtemp(prefix="roboshop-facts-"))
atexit.register(shutil.rmtree, _FACTS, ignore_errors=True)


def run_playbook(
    playbook: str,
    *extra: str,
    inventory: Path | None = None,
    timeout: float = 1800,
) -> PlaybookRun:
    """Run the project's ansible-playbook as ops would (project ansible.cfg), against the
    scenario's inventory. Output (stdout+stderr) is kept for assertions and printed."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update(
        ANSIBLE_CONFIG=str(PROJECT / "ansible.cfg"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_FORCE_COLOR="0",
        # a fresh fact cache per test session: facts of an earlier container with the same
        # name are never reused
        ANSIBLE_CACHE_PLUGIN_CONNECTION=str(_FACTS),
    )
    args = [
        "ansible-playbook",
        "-i",
        str(inventory or molecule_inventory()),
        str(PROJECT / playbook),
        *extra,
    ]
    t0 = time.monotonic()
    proc = subprocess.run(
        args,
        cwd=PROJECT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
        check=False,
    )
    seconds = time.monotonic() - t0
    print(f"\n$ {' '.join(args)}  (rc={proc.returncode}, {seconds:.1f} s)\n{proc.stdout}")
    return PlaybookRun(args, proc.returncode, proc.stdout, seconds)


def copy_inventory(dest: Path, overrides: dict | None = None, hosts: dict | None = None) -> Path:
    """A copy of the scenario's inventory (links resolved) with `overrides` as the last file
    of group_vars/all: a changed *inventory value*, as ops would make it; `hosts` ({group:
    {host: vars}}) adds hosts to groups in one more inventory file (never contacted by a
    refused run)."""
    src = molecule_inventory()
    shutil.copytree(src, dest, symlinks=False)
    if overrides:
        all_dir = dest / "group_vars" / "all"
        all_dir.mkdir(parents=True, exist_ok=True)
        (all_dir / "zz_test_override.yml").write_text("---\n" + yaml.safe_dump(overrides))
    if hosts:
        children = {group: {"hosts": members} for group, members in hosts.items()}
        (dest / "zz_test_hosts.yml").write_text(
            "---\n" + yaml.safe_dump({"all": {"children": children}})
        )
    return dest


@contextlib.contextmanager
def release_copy(label: str, edit: Callable[[Path], None] | None = None) -> Iterator[Path]:
    """A copy of service_src with a marker file (a new release id) and an optional edit;
    point payment_source_dir at it to deploy it."""
    tmp = Path(tempfile.mkdtemp(prefix=f"roboshop-release-{label}-"))
    src = tmp / "service_src"
    shutil.copytree(
        SERVICE_SRC, src, ignore=shutil.ignore_patterns("tests", "__pycache__", ".*", "venv")
    )
    (src / "RELEASE").write_text(f"{label} {uuid.uuid4().hex}\n")
    if edit:
        edit(src)
    try:
        yield src
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def break_app(src: Path) -> None:
    """An edit for release_copy: the app raises at import, so the release can never start."""
    wsgi = src / "payment/wsgi.py"
    wsgi.write_text(
        wsgi.read_text() + '\nraise RuntimeError("this release is broken on purpose")\n'
    )


# -- pytest reporting ---------------------------------------------------------------------------
def report_verify_duration(terminalreporter) -> None:
    """Print how long the verify step took (called from each conftest's terminal summary)."""
    seconds = time.monotonic() - _VERIFY_T0
    stats = terminalreporter.stats
    counts = ", ".join(f"{len(stats.get(k, []))} {k}" for k in ("passed", "failed", "error"))
    terminalreporter.write_sep(
        "=", f"verify duration: {seconds:.1f} s ({counts}; testinfra podman backend)"
    )


# -- many hosts: HAProxy (the broker cluster: rabbitmq_cluster.py) ------------------------
def host_running(container: str) -> bool:
    out = subprocess.run(
        ["podman", "inspect", "-f", "{{.State.Running}}", container],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    return out.stdout.strip() == "true"


# `show stat` on HAProxy's admin socket, with the load balancer's python3 (no socat there)
_HAPROXY_STAT = (
    "import socket\n"
    "s=socket.socket(socket.AF_UNIX); s.connect('/run/haproxy/admin.sock')\n"
    "s.sendall(b'show stat\\n'); out=b''\n"
    "while chunk := s.recv(65536): out += chunk\n"
    "print(out.decode())\n"
)


def haproxy_servers(container: str, backend: str = "payment") -> dict[str, str]:
    """{server: status} of a backend's servers in HAProxy (UP, DOWN, MAINT, DRAIN, ...)."""
    out = host(container).check_output("python3 -c %s", _HAPROXY_STAT)
    lines = [line for line in out.splitlines() if line and not line.startswith("#")]
    header = out.splitlines()[0].lstrip("# ").split(",")
    servers = {}
    for line in lines:
        row = dict(zip(header, line.split(","), strict=False))
        if row.get("pxname") == backend and row.get("svname") not in ("FRONTEND", "BACKEND"):
            servers[row["svname"]] = row["status"].split(" ")[0]
    return servers
