"""Many hosts under faults, with a careful client paying through the load balancer.

Each phase starts from an empty `orders` queue and an empty list of gateway calls, keeps
testing/tools/careful_client.py paying through HAProxy (a key per payment, retried with that
key until it has a final answer), injects its fault, stops the client, lets every host's
outbox drain, and then counts: payments, 200s, charges per key (the gateway's calls carry
the key in X-Request-ID), distinct orders in the queue, duplicates by message_id.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
import uuid

import rabbitmq_cluster as rc
import roboshop_testlib as lib
from conftest import BROKERS, LB, PAYMENT_HOSTS, STUBS

STOP_FILE = "/tmp/careful_client.stop"


# -- the client ---------------------------------------------------------------------------
def start_client(*targets: str, workers: int = 2) -> subprocess.Popen:
    cart_port = lib.lab_vars()["roboshop_cart_port"]
    args = [arg for t in targets for arg in ("--target", t)]
    return lib.start_client(
        STUBS, "careful_client.py", *args, "--cart-url", f"http://localhost:{cart_port}",
        "--stop-file", STOP_FILE, "--workers", str(workers), "--pause", "0.05",
        "--give-up", "90",
    )  # fmt: skip


def stop_client(client: subprocess.Popen) -> dict:
    return lib.stop_client(STUBS, client, STOP_FILE)


# -- what the phase left behind -------------------------------------------------------------
def drain_everything(payments) -> list[dict]:
    """Every host's outbox delivered, then the queue taken (read as dispatch)."""
    for name, h in payments.items():
        if lib.host_running(name):
            assert lib.wait_for(lambda h=h: lib.outbox_pending(h) == 0, timeout=120), (
                f"{name}: orders left in the outbox"
            )
    return lib.drain_orders(PAYMENT_HOSTS[0])


class Phase:
    """Start from nothing queued and no gateway calls; pay through the load balancer."""

    def __init__(self, payments, stubs, *targets: str) -> None:
        self.payments, self.stubs = payments, stubs
        self.targets = targets or (f"{LB}:{lib.PAYMENT_PORT}",)

    def __enter__(self) -> Phase:
        drain_everything(self.payments)
        lib.gateway_calls(self.stubs, "DELETE")
        self.client = start_client(*self.targets)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.client.returncode is None:
            self.summary = stop_client(self.client)

    def result(self, name: str) -> lib.Count:
        queued = drain_everything(self.payments)
        result = lib.count_payments(self.summary, lib.charges_by_key(self.stubs), queued)
        print(f"\n{result.line(name)}; statuses {self.summary['statuses']}")
        if self.summary["failures"]:
            print(f"failures: {self.summary['failures'][:5]}")
        return result


def payment_connections(broker: str) -> list[dict]:
    """Payment's AMQP connections anywhere in the cluster (list_connections asks every node):
    whether each is TLS, and its name (`client:port -> node address:port`)."""
    rows = json.loads(
        lib.host(broker).check_output(
            "rabbitmqctl -q --formatter json list_connections user name ssl port"
        )
    )
    return [row for row in rows if row["user"] == "roboshop"]


def node_of(row: dict) -> str:
    """The address of the node a connection reached (`client:port -> node:port`)."""
    return row["name"].split(" -> ")[1].rsplit(":", 1)[0]


def broker_addresses() -> dict[str, str]:
    """Each broker's address on the scenario's network, by container name."""
    return {b: lib.host(b).check_output("hostname -I").split()[0] for b in BROKERS}


def over_tls(rows: list[dict]) -> bool:
    return bool(rows) and all(
        row["ssl"] in (True, "true") and int(row["port"]) == 5671 for row in rows
    )


def kill_node_while_paying(payments, stubs, victim: str, phase_name: str, why: str) -> str:
    """SIGKILL one broker node while the client pays, start it again, wait for the cluster to
    be whole; then 0 orders lost, no key charged twice (duplicates by message_id are allowed
    after a crash). Returns a node that was not killed."""
    with Phase(payments, stubs) as phase:
        time.sleep(3)
        subprocess.run(["podman", "exec", victim, "pkill", "-KILL", "beam.smp"], check=True)
        time.sleep(10)  # paying while the node is gone
        lib.host(victim).run("systemctl start rabbitmq-server")
        time.sleep(3)
    survivor = next(b for b in BROKERS if b != victim)
    assert lib.wait_for(lambda: len(rc.running_nodes(survivor)) == len(BROKERS), timeout=120)
    result = phase.result(f"{phase_name} SIGKILL of {victim}, {why}")
    assert result.ok > 0
    assert not result.problems, "\n".join(result.problems)
    return survivor


# -- the scenario ---------------------------------------------------------------------------
def test_payment_reaches_the_cluster_over_tls(payments):
    """AMQPS to every node: the unit lists the three nodes on 5671 with the lab CA, and every
    uWSGI worker's connection is TLS, its node's name verified (pika: server_hostname)."""
    for name, h in payments.items():
        env = h.check_output("systemctl show --property=Environment --value payment.service")
        want = {"AMQP_TLS=true", "AMQP_PORT=5671", f"AMQP_HOST={','.join(BROKERS)}"}
        assert want <= set(env.split()), f"{name}: {env}"
    rows = payment_connections(BROKERS[0])
    assert len(rows) >= len(PAYMENT_HOSTS), rows  # one per uWSGI worker
    assert over_tls(rows), rows


def test_layout(payments):
    """Three broker nodes in one cluster, keys in Redis, both payment hosts up in HAProxy."""
    assert rc.running_nodes(BROKERS[0]) == sorted(f"rabbit@{b}" for b in BROKERS)
    for name, h in payments.items():
        code, text = lib.http(h, "GET", f"http://localhost:{lib.PAYMENT_PORT}/health")
        assert code == 200, f"{name}: {text}"
        assert json.loads(text)["idempotency"] == {"backend": "redis", "state": "connected"}
    assert lib.haproxy_servers(LB) == {h: "UP" for h in PAYMENT_HOSTS}


def test_orders_survive_the_loss_of_its_leader_node():
    """At the broker: `orders` on every node (mirrored by policy; a quorum queue on RabbitMQ
    >= 3.12, e.g. the Debian 13 hosts' 4.0), RoboShop dispatch's own declaration of
    `orders` (durable, no arguments) through every node, 200 messages confirmed on the
    leader's node, that node SIGKILLed, all 200 read from another node, the node back."""
    report = rc.prove_orders_survive_leader_kill(list(BROKERS))
    print(f"\nbroker-level proof: {json.dumps(report)}")


def test_a_rolling_release_drains_each_host(payments, stubs):
    before = {name: lib.current_release(h) for name, h in payments.items()}
    with lib.release_copy("cluster") as src, Phase(payments, stubs) as phase:
        time.sleep(3)
        run = lib.run_playbook("site.yml", "-e", f"payment_source_dir={src}")
        time.sleep(3)
    result = phase.result("(a) rolling release")
    assert run.rc == 0, "the rolling deploy failed (output above)"
    for name, h in payments.items():
        assert lib.current_release(h) != before[name], f"{name} was not rolled"
    # each host was drained in HAProxy before its restart, and put back after its gate
    journal = lib.host(LB).check_output("journalctl -u haproxy --no-pager -o cat")
    for name in PAYMENT_HOSTS:
        assert re.search(rf"changed: \[{name} -> {LB}[](]", run.output), f"{name}: no drain"
        assert re.search(rf"payment/{name} enters drain state", journal), f"{name}: no drain"
    assert result.failed == 0, phase.summary["failures"][:5]
    assert result.ok >= 20, "too few payments during the roll"
    assert result.duplicates == 0
    assert not result.problems, "\n".join(result.problems)


def test_b_the_node_holding_orders_is_killed(payments, stubs):
    victim = rc.node_names(list(BROKERS))[rc.orders_queue(BROKERS[0])["leader"]]
    survivor = kill_node_while_paying(payments, stubs, victim, "(b)", "which held `orders`")
    # payment's connections (on the first node it could reach, often not the leader) are TLS
    assert over_tls(payment_connections(survivor))


def test_c_a_payment_host_stops(payments, stubs):
    gone = PAYMENT_HOSTS[1]
    with Phase(payments, stubs) as phase:
        time.sleep(3)
        subprocess.run(["podman", "stop", "-t", "30", gone], check=True, capture_output=True)
        assert lib.wait_for(lambda: lib.haproxy_servers(LB).get(gone) != "UP", timeout=30)
        time.sleep(5)  # paying on one host
    summary = phase.summary
    subprocess.run(["podman", "start", gone], check=True, capture_output=True)
    h = lib.host(gone)
    assert lib.wait_for(
        lambda: lib.http(h, "GET", f"http://localhost:{lib.PAYMENT_PORT}/health")[0] == 200,
        timeout=180,
    ), f"{gone} did not come back"
    result = phase.result(f"(c) {gone} stopped")
    assert summary["failures"] == [] or all(f.get("status") == 504 for f in summary["failures"]), (
        summary["failures"][:5]
    )  # only "charge state unknown" (a charge cut by the stop)
    assert not result.problems, "\n".join(result.problems)
    assert lib.wait_for(lambda: lib.haproxy_servers(LB).get(gone) == "UP", timeout=60)


def test_d_one_key_on_both_hosts_is_one_charge(payments, stubs):
    drain_everything(payments)
    lib.gateway_calls(stubs, "DELETE")
    user = f"anonymous-{uuid.uuid4().hex[:12]}"
    cart = lib.fetch_cart(stubs, user)
    key = uuid.uuid4().hex
    answers: dict[str, tuple[int, str]] = {}

    def pay(name: str, n: int) -> None:
        headers = {"Idempotency-Key": key, "X-Request-ID": f"{key}.{n}"}
        answers[name] = lib.http(
            stubs, "POST", f"http://{name}:{lib.PAYMENT_PORT}/pay/{user}", cart, 30, headers
        )

    threads = [threading.Thread(target=pay, args=(name, n)) for n, name in enumerate(PAYMENT_HOSTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # the one that found the key in flight (409) asks again, as a careful client does
    for n, name in enumerate(PAYMENT_HOSTS):
        for retry in range(30):
            if answers[name][0] != 409:
                break
            time.sleep(1)
            pay(name, 10 + 10 * n + retry)
    statuses = {name: code for name, (code, _) in answers.items()}
    assert set(statuses.values()) == {200}, answers
    orderids = {json.loads(text)["orderid"] for _, text in answers.values()}
    assert len(orderids) == 1, answers
    charges = lib.charges_by_key(stubs)
    queued = drain_everything(payments)
    print(f"\n(d) one key on both hosts: {statuses}, charges {charges[key]}, queue {queued}")
    assert charges[key] == 1
    assert [m["orderid"] for m in queued] == list(orderids)


def test_e_payment_follows_the_cluster_when_its_node_dies(payments, stubs):
    """SIGKILL of the node payment's workers are connected to (AMQPS): every worker
    reconnects to another node, over TLS with that node's name verified (pika's
    server_hostname per host), and the payments go on: 0 lost, no key charged twice."""
    addresses = broker_addresses()
    before = payment_connections(BROKERS[0])
    assert over_tls(before), before
    used = [node_of(row) for row in before]
    victim = next(b for b, a in addresses.items() if a == max(set(used), key=used.count))
    survivor = kill_node_while_paying(
        payments, stubs, victim, "(e)", "which held payment's connections"
    )
    # every worker is back (one connection each), none on the killed node, all TLS
    assert lib.wait_for(lambda: len(payment_connections(survivor)) == len(before), timeout=60)
    after = payment_connections(survivor)
    assert over_tls(after), after
    assert addresses[victim] not in {node_of(row) for row in after}, after
    print(f"payment's connections: on {victim} before, then {sorted(map(node_of, after))}")
