"""RabbitMQ 4.0 (Debian 13) as the rabbitmq role leaves it: one cluster of three nodes that
formed at their first boot, the AMQP users with their permissions, and `orders` a quorum
queue that keeps its confirmed messages when its leader's node is SIGKILLed."""

from __future__ import annotations

import json

import rabbitmq_cluster as rc

BROKERS = ("r4-rabbitmq1", "r4-rabbitmq2", "r4-rabbitmq3")


def test_the_brokers_run_rabbitmq_4():
    for c in BROKERS:
        version = rc.sh(c, "dpkg-query", "-W", "-f=${Version}", "rabbitmq-server")
        assert version.startswith("4."), f"{c}: rabbitmq-server {version}"


def test_one_cluster_of_the_three_nodes():
    nodes = sorted(rc.node_names(list(BROKERS)))
    for c in BROKERS:
        assert rc.running_nodes(c) == nodes, f"{c} sees {rc.running_nodes(c)}"


def test_the_users_have_exactly_their_permissions_and_guest_is_gone():
    users = {u["user"] for u in rc.rabbitmqctl_json(BROKERS[0], "list_users")}
    assert {"roboshop", "dispatch"} <= users and "guest" not in users, users
    perms = {p["user"]: p for p in rc.rabbitmqctl_json(BROKERS[0], "list_permissions")}
    assert perms["dispatch"]["configure"] == "^$" and perms["dispatch"]["write"] == "^$", perms


def test_the_default_queue_type_is_quorum():
    vhosts = rc.rabbitmqctl_json(BROKERS[0], "list_vhosts", "name", "default_queue_type")
    assert {v["name"]: v["default_queue_type"] for v in vhosts}["/"] == "quorum", vhosts


def test_orders_survive_the_loss_of_its_leader_node():
    """RoboShop dispatch's no-argument declaration of `orders` through every node makes a
    quorum queue on all three; 200 messages confirmed on the leader's node, that node
    SIGKILLed, all 200 read from another node, the node back in the cluster."""
    report = rc.prove_orders_survive_leader_kill(list(BROKERS))
    assert report["queue_type"] == "quorum", report
    print(f"\nbroker-level proof: {json.dumps(report)}")
