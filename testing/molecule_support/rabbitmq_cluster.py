"""Checks of a RabbitMQ cluster deployed by the rabbitmq role, for a molecule `cluster`
scenario's tests (the project's pytest.ini puts this directory on pytest's pythonpath) or by hand:

    .venv/bin/python testing/molecule_support/rabbitmq_cluster.py CONTAINER CONTAINER ...

The containers are the broker hosts (podman names). Everything runs through `podman exec`:
rabbitmqctl on the hosts, and testing/tools/orders_ha.py with the controller's pika copied
next to it (the broker hosts have no pika). Credentials come from the lab's values
(inventory/lab/group_vars/all): the payment user declares and publishes, `dispatch` reads;
they reach the hosts as environment variables, never on a command line.

prove_orders_survive_leader_kill() is the whole proof: every node in cluster_status, `orders`
replicated on every node (RabbitMQ < 3.12: a classic queue mirrored by the role's policy;
>= 3.12, e.g. 4.0 on Debian 13: a quorum queue, the vhost's default type), a durable
no-argument declare as dispatch does, N persistent messages published with confirms to the
queue leader's node, the leader's beam.smp SIGKILLed, all N read back from another node, and
the killed node back in the cluster.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pika
import yaml
from roboshop_testlib import wait_for

PROJECT = Path(__file__).resolve().parents[2]
LAB_VARS = PROJECT / "inventory/lab/group_vars/all"
TOOL = PROJECT / "testing/tools/orders_ha.py"
ON_HOST = "/tmp/roboshop-ha"
HA_POLICY = "roboshop-orders-ha"


def _lab_vars() -> dict:
    merged: dict = {}
    for path in sorted(LAB_VARS.glob("*.yml")):
        merged.update(yaml.safe_load(path.read_text()) or {})
    return merged


def _env() -> dict[str, str]:
    v = _lab_vars()
    reader = next(u for u in v["roboshop_amqp_users"] if u["name"] == "dispatch")
    assert "vault_roboshop_dispatch_amqp_password" in reader["password"]
    return {
        **os.environ,
        "AMQP_USER": v.get("roboshop_amqp_user", "roboshop"),
        "AMQP_PASS": v["vault_roboshop_amqp_password"],
        "QUEUE_AMQP_USER": "dispatch",
        "QUEUE_AMQP_PASS": v["vault_roboshop_dispatch_amqp_password"],
    }


def sh(container: str, *argv: str, check: bool = True, timeout: float = 120) -> str:
    out = subprocess.run(
        ["podman", "exec", container, *argv],
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )
    if check and out.returncode != 0:
        raise RuntimeError(f"{container}: {' '.join(argv)}: rc={out.returncode} {out.stderr}")
    return out.stdout


def rabbitmqctl_json(container: str, *args: str):
    return json.loads(sh(container, "rabbitmqctl", *args, "--formatter", "json"))


def install_client(container: str) -> None:
    """orders_ha.py and the controller's pika (pure Python) in ON_HOST on the container."""
    sh(container, "rm", "-rf", ON_HOST)
    sh(container, "mkdir", "-p", ON_HOST)
    subprocess.run(["podman", "cp", str(TOOL), f"{container}:{ON_HOST}/orders_ha.py"], check=True)
    subprocess.run(
        ["podman", "cp", str(Path(pika.__file__).parent), f"{container}:{ON_HOST}/pika"],
        check=True,
    )


def orders_ha(container: str, *args: str, check: bool = True) -> dict:
    out = subprocess.run(
        [
            "podman",
            "exec",
            "-e",
            "AMQP_USER",
            "-e",
            "AMQP_PASS",
            "-e",
            "QUEUE_AMQP_USER",
            "-e",
            "QUEUE_AMQP_PASS",
            "-e",
            f"PYTHONPATH={ON_HOST}",
            container,
            "python3",
            f"{ON_HOST}/orders_ha.py",
            *args,
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
        env=_env(),
    )
    result = json.loads(out.stdout.strip().splitlines()[-1]) if out.stdout.strip() else {}
    if check and out.returncode != 0:
        raise RuntimeError(f"{container}: orders_ha.py {' '.join(args)}: {result} {out.stderr}")
    return result


def node_names(containers: list[str]) -> dict[str, str]:
    """rabbit@<short host name> -> container."""
    return {"rabbit@" + sh(c, "hostname", "-s").strip(): c for c in containers}


def running_nodes(container: str) -> list[str]:
    return sorted(rabbitmqctl_json(container, "cluster_status")["running_nodes"])


def orders_queue(container: str) -> dict:
    """The orders queue as rabbitmqctl lists it: type, policy, messages, arguments, and the
    nodes of its leader and of its other replicas (`mirrors`: all; `synchronised_mirrors`:
    those that hold every message). A quorum queue names them (leader, members, online: an
    online member is a Raft follower); a classic one gives pids, whose JSON form lacks the
    node, so those come from the table output (<rabbit@rmq1.1796176064.1373.0>)."""
    rows = rabbitmqctl_json(
        container, "list_queues", "name", "type", "policy", "messages", "arguments"
    )
    queue = next(r for r in rows if r["name"] == "orders")
    if queue["type"] == "quorum":
        (row,) = (
            r
            for r in rabbitmqctl_json(
                container, "list_queues", "name", "leader", "members", "online"
            )
            if r["name"] == "orders"
        )
        queue["leader"] = str(row["leader"])
        queue["mirrors"] = sorted(str(m) for m in row["members"] if m != row["leader"])
        queue["synchronised_mirrors"] = sorted(str(m) for m in row["online"] if m != row["leader"])
        return queue
    table = sh(
        container,
        "rabbitmqctl",
        "-q",
        "list_queues",
        "name",
        "pid",
        "slave_pids",
        "synchronised_slave_pids",
        "--no-table-headers",
    )
    line = next(li for li in table.splitlines() if li.split("\t")[0] == "orders")
    _name, pid, mirrors, synced = line.split("\t")[:4]
    queue["leader"] = _nodes_in(pid)[0]
    queue["mirrors"] = _nodes_in(mirrors)
    queue["synchronised_mirrors"] = _nodes_in(synced)
    return queue


def _nodes_in(pids: str) -> list[str]:
    return sorted(re.findall(r"<(rabbit@[A-Za-z0-9-]+)[.]", pids))


def prove_orders_survive_leader_kill(containers: list[str], count: int = 200) -> dict:
    """The proof (module docstring); returns its numbers; raises AssertionError on a failure."""
    nodes = node_names(containers)
    report: dict = {"nodes": sorted(nodes)}
    for c in containers:
        assert running_nodes(c) == sorted(nodes), (
            f"{c} sees {running_nodes(c)}, not {sorted(nodes)}"
        )
        install_client(c)

    first = containers[0]
    # The no-argument declare (the first one creates the queue, its leader on that node),
    # then the same through every other node: each must match the existing queue.
    report["declare"] = [orders_ha(c, "declare", first_host(c)) for c in containers]
    queue = wait_for(
        lambda: (
            (q := orders_queue(first)) and len(q["synchronised_mirrors"]) == len(nodes) - 1 and q
        ),
        60,
    )
    assert queue, f"orders has not {len(nodes) - 1} synchronised mirrors: {orders_queue(first)}"
    if queue["type"] == "quorum":  # RabbitMQ >= 3.12: the vhost's default queue type
        assert sorted([queue["leader"], *queue["mirrors"]]) == sorted(nodes), queue
    else:  # before 3.12: a classic queue, mirrored by the role's policy
        assert queue["policy"] == HA_POLICY, f"policy on orders is {queue['policy']!r}"
    report["policy"] = queue["policy"]
    report["queue_type"] = queue["type"]
    report["arguments"] = queue["arguments"]

    leader = queue["leader"]
    leader_c = nodes[leader]
    other_c = next(c for n, c in nodes.items() if n != leader)
    prefix = f"ha{int(time.time())}"
    report["leader_before"] = leader
    report["publish"] = orders_ha(
        leader_c, "publish", first_host(leader_c), "--count", str(count), "--prefix", prefix
    )
    synced = wait_for(
        lambda: (
            (q := orders_queue(other_c))["messages"] >= count
            and len(q["synchronised_mirrors"]) == len(nodes) - 1
        ),
        30,
    )
    assert synced, f"mirrors not synchronised before the kill: {orders_queue(other_c)}"

    t0 = time.monotonic()
    sh(leader_c, "pkill", "-9", "beam.smp")
    report["killed"] = f"{leader} ({leader_c}): pkill -9 beam.smp"
    # Read only once a mirror has taken over (the messages then come from a mirror's copy).
    promoted = wait_for(lambda: _leader_or_none(other_c) not in (None, leader), 60, 0.5)
    assert promoted, f"no mirror took over from {leader}"
    report["seconds_to_new_leader"] = round(time.monotonic() - t0, 1)
    taken = orders_ha(
        other_c,
        "take",
        first_host(other_c),
        "--count",
        str(count),
        "--prefix",
        prefix,
        "--timeout",
        "90",
        check=False,
    )
    report["read_back_from"] = other_c
    report["take"] = taken
    report["seconds_to_read_all"] = round(time.monotonic() - t0, 1)
    after = orders_queue(other_c)
    report["leader_after"] = after["leader"]
    assert taken.get("found") == count, f"read {taken} of {count} after the kill"

    # The killed node comes back (systemd: Restart=on-failure) and rejoins.
    back = wait_for(lambda: running_nodes(other_c) == sorted(nodes), 180, 3)
    report["killed_node_back_in_cluster"] = bool(back)
    assert back, f"{leader} is not back in the cluster: {running_nodes(other_c)}"
    return report


def _leader_or_none(container: str) -> str | None:
    try:
        return orders_queue(container)["leader"]
    except (RuntimeError, StopIteration, IndexError, ValueError):
        return None


def first_host(container: str) -> str:
    """The node's own short host name (the AMQP listener's address from inside the host)."""
    return sh(container, "hostname", "-s").strip()


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(f"usage: {sys.argv[0]} CONTAINER CONTAINER [CONTAINER ...]")
    print(json.dumps(prove_orders_survive_leader_kill(sys.argv[1:]), indent=2))
