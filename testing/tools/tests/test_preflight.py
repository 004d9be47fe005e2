"""playbooks/preflight.yml, run by the project's ansible-playbook against a copy of the lab's
inventory whose hosts cannot be reached: every host's ansible_host is 192.0.2.1 (TEST-NET-1)
and ssh is a stand-in that only records that it was started.

- every rule the preflight applies (each role's tasks/validate.yml, and the hosts'
  ansible_host) refuses its bad value: "Preflight refused the inventory, nothing was
  changed" and a line that names the host and the variable (the inventory's name, as
  molecule/failures' test_failures.py expects it: its BAD_VALUES and EXTRA_HOSTS are the
  first cases below, with their words);
- several problems on several hosts come out in one report (the cases run several at a
  time for that, and to keep this file under half a minute);
- the lab's inventory and every molecule scenario's pass;
- no case tries to reach a host (no UNREACHABLE, ssh never started).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
LAB = ROOT / "inventory/lab"
REFUSED = "Preflight refused the inventory, nothing was changed"


class Case(NamedTuple):
    """An inventory change and what the refusal must say."""

    overrides: dict  # the last file of group_vars/all (as lib.copy_inventory writes it)
    expect: list[tuple[str, list[str]]]  # each (host, words): one line names them all
    hosts: dict | None = None  # {group: {host: vars}} added in one more inventory file
    drop: tuple[str, ...] = ()  # variables removed from the lab's group_vars/all
    drop_groups: tuple[str, ...] = ()  # groups removed from the lab's hosts.yml


REDIS_HOST = {"redis": {"lab-redis": {}}}
CASES = {
    # molecule/failures/tests/test_failures.py: BAD_VALUES and EXTRA_HOSTS, the same words
    "placeholder": Case(
        {"roboshop_cart_host": "<CART-SERVER-IPADDRESS>"}, [("lab-payment", ["roboshop_cart_host"])]
    ),
    "malformed-port": Case(
        {"roboshop_user_port": "80eighty"}, [("lab-payment", ["roboshop_user_port"])]
    ),
    "malformed-host": Case(
        {"roboshop_amqp_host": "rabbit mq!"}, [("lab-payment", ["roboshop_amqp_host"])]
    ),
    "lab-password-outside-lab": Case(
        {"roboshop_environment": "production"},
        [
            ("lab-payment", ["vault_roboshop_amqp_password", "lab password"]),
            ("lab-rabbitmq", ["vault_roboshop_rabbitmq_erlang_cookie", "lab cookie", "production"]),
        ],
    ),
    "redis-backend-without-redis": Case(
        {"roboshop_payment_idempotency_backend": "redis", "roboshop_redis_host": ""},
        [("lab-payment", ["roboshop_redis_host", "group redis is empty"])],
    ),
    "sqlite-with-two-payment-hosts": Case(
        {},
        [("lab-payment", ["roboshop_payment_idempotency_backend", "group payment has 2 hosts"])],
        hosts={"payment": {"lab-payment-2": {}}},
    ),
    # the other rules, one case each
    "ansible-host-placeholder": Case(
        {},
        [("lab-lb", ["ansible_host", "<LOADBALANCER-SERVER-IPADDRESS>"])],
        hosts={"loadbalancer": {"lab-lb": {"ansible_host": "<LOADBALANCER-SERVER-IPADDRESS>"}}},
    ),
    "backend-unknown": Case(
        {"roboshop_payment_idempotency_backend": "memcached"},
        [("lab-payment", ["roboshop_payment_idempotency_backend", "not sqlite or redis"])],
    ),
    "no-broker": Case(
        {},
        [("lab-payment", ["roboshop_amqp_hosts", "roboshop_amqp_host", "payment has no broker"])],
        drop=("roboshop_amqp_host",),
        drop_groups=("rabbitmq",),
    ),
    "broker-from-the-group": Case(
        {},
        [
            ("lab-payment", ["payment_amqp_hosts", "<RABBITMQ-SERVER-IPADDRESS>"]),
            ("lab-rabbitmq", ["ansible_host", "<RABBITMQ-SERVER-IPADDRESS>"]),
        ],
        hosts={"rabbitmq": {"lab-rabbitmq": {"ansible_host": "<RABBITMQ-SERVER-IPADDRESS>"}}},
        drop=("roboshop_amqp_host",),
    ),
    "broker-list-not-a-list": Case(
        {"roboshop_amqp_hosts": "rabbitmq"},
        [("lab-payment", ["roboshop_amqp_hosts", "list of host names or IPs"])],
    ),
    "broker-list-entry": Case(
        {"roboshop_amqp_hosts": ["rabbitmq", "<RABBITMQ-SERVER-2-IPADDRESS>"]},
        [("lab-payment", ["roboshop_amqp_hosts", "<RABBITMQ-SERVER-2-IPADDRESS>"])],
    ),
    "amqp-port": Case(
        {"roboshop_amqp_port": 0},
        [
            ("lab-payment", ["roboshop_amqp_port", "1-65535"]),
            ("lab-rabbitmq", ["roboshop_amqp_port"]),
        ],
    ),
    "amqp-user-guest": Case(
        {"roboshop_amqp_user": "guest"},
        [
            ("lab-payment", ["roboshop_amqp_user", "guest"]),
            ("lab-rabbitmq", ["roboshop_amqp_user"]),
        ],
    ),
    "amqp-password-missing": Case(
        {},
        [
            ("lab-payment", ["vault_roboshop_amqp_password", "not defined"]),
            ("lab-rabbitmq", ["vault_roboshop_amqp_password", "not defined"]),
        ],
        drop=("vault_roboshop_amqp_password",),
    ),
    "amqp-password-placeholder": Case(
        {"vault_roboshop_amqp_password": "<AMQP-PASSWORD>"},
        [("lab-payment", ["vault_roboshop_amqp_password", "placeholder"])],
    ),
    "amqp-password-dollar": Case(
        {"vault_roboshop_amqp_password": "pa$$word"},
        [
            ("lab-payment", ["vault_roboshop_amqp_password", "'$'"]),
            ("lab-rabbitmq", ["vault_roboshop_amqp_password", "'$'"]),
        ],
    ),
    "gateway-not-a-url": Case(
        {"roboshop_payment_gateway": "paypal.com"},
        [("lab-payment", ["roboshop_payment_gateway", "http(s)://"])],
    ),
    # the service refuses such a host at start: the preflight refuses it first
    "gateway-host-malformed": Case(
        {"roboshop_payment_gateway": "http://pay..example/charge"},
        [("lab-payment", ["roboshop_payment_gateway", "pay..example", "not a host name"])],
    ),
    "python36-without-artifact": Case(
        {"python_runtime_python36": True},
        [("lab-payment", ["python_runtime_python36", "payment_artifact_url", "3.9"])],
    ),
    "artifact-without-checksum": Case(
        {"payment_artifact_url": "https://artifacts.example.invalid/payment.zip"},
        [("lab-payment", ["payment_artifact_checksum", "sha256:<64 hex>"])],
    ),
    "cluster-without-cookie": Case(
        {},
        [("lab-rabbitmq", ["vault_roboshop_rabbitmq_erlang_cookie", "Erlang cookie"])],
        hosts={"rabbitmq": {"lab-rabbitmq-2": {}}},
        drop=("vault_roboshop_rabbitmq_erlang_cookie",),
    ),
    "cookie-shape": Case(
        {"vault_roboshop_rabbitmq_erlang_cookie": "short"},
        [("lab-rabbitmq", ["vault_roboshop_rabbitmq_erlang_cookie", "20-255 letters and digits"])],
    ),
    "redis-password-missing": Case(
        {},
        [
            ("lab-payment", ["vault_roboshop_redis_password"]),
            ("lab-redis", ["vault_roboshop_redis_password", "not defined"]),
        ],
        hosts=REDIS_HOST,
        drop=("vault_roboshop_redis_password",),
    ),
    "redis-password-white-space": Case(
        {"vault_roboshop_redis_password": "two words"},
        [
            ("lab-payment", ["vault_roboshop_redis_password", "white space"]),
            ("lab-redis", ["vault_roboshop_redis_password", "white space"]),
        ],
        hosts=REDIS_HOST,
    ),
    "redis-lab-password-outside-lab": Case(
        {"roboshop_environment": "production"},
        [("lab-redis", ["vault_roboshop_redis_password", "lab password"])],
        hosts=REDIS_HOST,
    ),
    "redis-host-malformed": Case(
        {"roboshop_payment_idempotency_backend": "redis", "roboshop_redis_host": "redis host"},
        [("lab-payment", ["roboshop_redis_host", "not a host name or IP address"])],
    ),
    "redis-port": Case(
        {"roboshop_redis_port": "six"},
        [("lab-payment", ["roboshop_redis_port", "not an integer"])],
        hosts=REDIS_HOST,
    ),
    # rules that only the roles applied before (on the host, after the hosts before them had
    # changed), now in the preflight too
    "redis-port-on-the-redis-host": Case(
        {"roboshop_redis_port": 70000},
        [("lab-redis", ["roboshop_redis_port", "1-65535"])],
        hosts=REDIS_HOST,
    ),
    "amqp-vhost-empty": Case(
        {"roboshop_amqp_vhost": ""}, [("lab-rabbitmq", ["roboshop_amqp_vhost", "empty"])]
    ),
    "amqp-users-guest": Case(
        {"roboshop_amqp_users": [{"name": "guest", "password": "Guest-Password-1"}]},
        [("lab-rabbitmq", ["roboshop_amqp_users", "guest"])],
    ),
    "lb-server-address": Case(
        {"roboshop_payment_lb_address": "<PAYMENT-LB-ADDRESS>"},
        [("lab-lb", ["loadbalancer_servers", "<PAYMENT-LB-ADDRESS>"])],
    ),
    "lb-port": Case(
        {"roboshop_loadbalancer_port": 0}, [("lab-lb", ["roboshop_loadbalancer_port", "1-65535"])]
    ),
    # the shared layout (group_vars/all.yml feeds roboshop_base and payment from these)
    "layout": Case(
        {"roboshop_app_dir": "app", "roboshop_service_user": "Roboshop User"},
        [
            ("lab-payment", ["roboshop_app_dir", "not an absolute path"]),
            ("lab-payment", ["roboshop_service_user", "not a user or group name"]),
        ],
    ),
    # AMQPS: the certificates and the key are PEM contents (the key's value never shown)
    "tls-not-pem": Case(
        {
            "roboshop_amqp_tls_enabled": True,
            "roboshop_amqp_tls_ca": "/etc/ssl/lab-ca.pem",
            "roboshop_amqp_tls_cert": "<BROKER-CERTIFICATE>",
            "vault_roboshop_amqp_tls_key": "not-a-key-value",
        },
        [
            ("lab-rabbitmq", ["roboshop_amqp_tls_ca", "not a PEM certificate"]),
            ("lab-rabbitmq", ["roboshop_amqp_tls_cert", "placeholder"]),
            ("lab-rabbitmq", ["vault_roboshop_amqp_tls_key", "not a PEM private key"]),
            ("lab-payment", ["roboshop_amqp_tls_ca", "not a PEM certificate"]),
        ],
    ),
    "tls-only-without-tls": Case(
        {"roboshop_amqp_tls_only": True},
        [("lab-rabbitmq", ["roboshop_amqp_tls_only", "TLS is off"])],
    ),
    # an inventory that still sets the removed switch is told where the choice went
    "build-tools-removed": Case(
        {"python_runtime_build_tools": True},
        [("lab-payment", ["python_runtime_build_tools", "python_runtime_extra_packages"])],
    ),
}
# The cases run together where their changes do not overlap: a run lists every host's
# problems at once, so each case's line is in its run's one refusal (about 1.5 s a run).
RUNS = [
    ["placeholder", "malformed-port", "malformed-host", "backend-unknown", "gateway-not-a-url",
     "artifact-without-checksum", "amqp-port", "amqp-user-guest", "cookie-shape",
     "amqp-vhost-empty", "amqp-users-guest", "lb-server-address", "lb-port", "layout",
     "build-tools-removed"],
    ["lab-password-outside-lab", "python36-without-artifact", "sqlite-with-two-payment-hosts",
     "ansible-host-placeholder", "broker-list-entry"],
    ["redis-password-white-space", "redis-port", "tls-not-pem"],
    ["redis-lab-password-outside-lab", "redis-port-on-the-redis-host", "amqp-password-dollar",
     "broker-list-not-a-list", "tls-only-without-tls"],
    ["redis-password-missing", "amqp-password-missing", "cluster-without-cookie"],
    ["no-broker", "redis-backend-without-redis", "amqp-password-placeholder"],
    ["broker-from-the-group", "redis-host-malformed", "gateway-host-malformed"],
]  # fmt: skip
RUN_OF = {case: f"bad-{i}" for i, cases in enumerate(RUNS) for case in cases}
assert sorted(RUN_OF) == sorted(CASES), "every case in exactly one run"


def merged(cases: list[str]) -> Case:
    """One inventory change made of several cases' (which must not touch the same value)."""
    overrides: dict = {}
    hosts: dict = {}
    for name in cases:
        case = CASES[name]
        assert not set(overrides) & set(case.overrides), f"{name} overlaps another case"
        overrides.update(case.overrides)
        for group, members in (case.hosts or {}).items():
            hosts.setdefault(group, {}).update(members)
    return Case(
        overrides,
        [pair for name in cases for pair in CASES[name].expect],
        hosts or None,
        tuple(v for name in cases for v in CASES[name].drop),
        tuple(g for name in cases for g in CASES[name].drop_groups),
    )


FAKE_SSH = """#!/bin/sh
echo "$@" >> "{marker}"
exit 255
"""


class Run(NamedTuple):
    rc: int
    output: str
    ssh_started: bool


def inventory(dest: Path, case: Case, source: Path = LAB, groups: dict | None = None) -> Path:
    """A copy of `source` (links resolved) whose hosts are 192.0.2.1, changed as `case` says;
    `groups` ({group: [host, ...]}) replaces its hosts.yml."""
    shutil.copytree(source, dest, symlinks=False)
    all_dir = dest / "group_vars/all"
    all_dir.mkdir(parents=True, exist_ok=True)
    for path in all_dir.glob("*.yml"):
        values = yaml.safe_load(path.read_text()) or {}
        if set(case.drop) & set(values):
            kept = {k: v for k, v in values.items() if k not in case.drop}
            path.write_text("---\n" + yaml.safe_dump(kept))
    if groups is not None:
        children = {g: {"hosts": dict.fromkeys(hosts)} for g, hosts in groups.items()}
        (dest / "hosts.yml").write_text("---\n" + yaml.safe_dump({"all": {"children": children}}))
    if case.drop_groups:
        hosts = yaml.safe_load((dest / "hosts.yml").read_text())
        for group in case.drop_groups:
            hosts["all"]["children"].pop(group)
        (dest / "hosts.yml").write_text("---\n" + yaml.safe_dump(hosts))
    # before the case's own file (zz_): a case may set ansible_host itself, as a host var
    (all_dir / "zy_unreachable.yml").write_text("---\nansible_host: 192.0.2.1\n")
    if case.overrides:
        (all_dir / "zz_test_override.yml").write_text("---\n" + yaml.safe_dump(case.overrides))
    if case.hosts:
        children = {group: {"hosts": members} for group, members in case.hosts.items()}
        (dest / "zz_test_hosts.yml").write_text(
            "---\n" + yaml.safe_dump({"all": {"children": children}})
        )
    return dest


def preflight(tmp: Path, inv: Path, env: dict[str, str] | None = None) -> Run:
    bin_dir = tmp / "bin"
    bin_dir.mkdir()
    marker = tmp / "ssh-started"
    ssh = bin_dir / "ssh"
    ssh.write_text(FAKE_SSH.format(marker=marker))
    ssh.chmod(0o755)
    out = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(inv),
         str(ROOT / "playbooks/preflight.yml")],
        capture_output=True, text=True, timeout=120, check=False, cwd=tmp,
        env={"ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1",
             "PATH": f"{bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}",
             "HOME": str(tmp), "ANSIBLE_SSH_EXECUTABLE": str(ssh), "ANSIBLE_TIMEOUT": "3",
             # the repository's fact cache (.cache/facts) is left alone
             "ANSIBLE_CACHE_PLUGIN": "memory", **(env or {})},
    )  # fmt: skip
    return Run(out.returncode, out.stdout + out.stderr, marker.exists())


def lab_ca(tmp: Path) -> dict[str, str]:
    """The lab CA (testing/lab/tls-ca.yml) made in tmp, for a scenario with AMQPS (its
    molecule.yml sets ROBOSHOP_LAB_TLS_DIR): the environment that points its values there."""
    env = {"ROBOSHOP_LAB_TLS_DIR": str(tmp / "tls")}
    out = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-playbook"), "-i", "localhost,",
         str(ROOT / "testing/lab/tls-ca.yml")],
        capture_output=True, text=True, timeout=120, check=False, cwd=tmp,
        env={"ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1",
             "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp),
             "ANSIBLE_CACHE_PLUGIN": "memory", **env},
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    return env


def scenario_inventories() -> dict[str, tuple[Path, dict, bool]]:
    """Each molecule scenario's hosts by group, with the group_vars it links and whether it
    reads the lab CA (ROBOSHOP_LAB_TLS_DIR in its provisioner's env)."""
    found = {}
    for molecule_yml in sorted((ROOT / "molecule").glob("*/molecule.yml")):
        config = yaml.safe_load(molecule_yml.read_text())
        groups: dict[str, list[str]] = {}
        for platform in config["platforms"]:
            for group in platform.get("groups", []):
                groups.setdefault(group, []).append(platform["name"])
        links = config.get("provisioner", {}).get("inventory", {}).get("links", {})
        group_vars = molecule_yml.parent / links.get("group_vars", str(LAB / "group_vars"))
        tls = "ROBOSHOP_LAB_TLS_DIR" in config.get("provisioner", {}).get("env", {})
        found[molecule_yml.parent.name] = (group_vars.resolve(), groups, tls)
    return found


SCENARIOS = scenario_inventories()


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Run]:
    """Every run at once, two at a time."""
    jobs = {f"bad-{i}": merged(cases) for i, cases in enumerate(RUNS)}
    jobs["good-lab"] = Case({}, [])

    def run(name: str) -> Run:
        tmp = tmp_path_factory.mktemp(name)
        if name.startswith("good-scenario-"):
            group_vars, groups, tls = SCENARIOS[name.removeprefix("good-scenario-")]
            src = tmp / "src"
            shutil.copytree(group_vars, src / "group_vars")
            inv = inventory(tmp / "inventory", Case({}, []), src, groups)
            if tls:
                return preflight(tmp, inv, lab_ca(tmp))
        else:
            inv = inventory(tmp / "inventory", jobs[name])
        return preflight(tmp, inv)

    names = list(jobs) + [f"good-scenario-{s}" for s in SCENARIOS]
    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip(names, pool.map(run, names)))


def assert_reached_no_host(run: Run) -> None:
    assert "UNREACHABLE" not in run.output, run.output
    assert not run.ssh_started, "the preflight started ssh to a host"


def assert_refused(run: Run, expect: list[tuple[str, list[str]]]) -> None:
    assert run.rc != 0, f"the preflight accepted the inventory:\n{run.output}"
    assert REFUSED in run.output, run.output
    # the refusal's lines (its msg list): "<host>: <problem>"
    lines = re.findall(r'^ +"([^"\s]+): (.*)",?$', run.output, re.MULTILINE)
    for host, words in expect:
        named = [text for name, text in lines if name == host and all(w in text for w in words)]
        assert named, f"no line of {host} names {words}:\n{run.output}"


@pytest.mark.parametrize("case", list(CASES))
def test_a_bad_value_is_refused_naming_host_and_variable(runs, case):
    run = runs[RUN_OF[case]]
    assert_refused(run, CASES[case].expect)
    assert_reached_no_host(run)


def test_every_problem_of_every_host_in_one_report(runs):
    """The first run's 13 problems, on 3 hosts of 3 roles, in one refusal."""
    run = runs["bad-0"]
    assert_refused(run, merged(RUNS[0]).expect)
    assert {"lab-payment", "lab-rabbitmq", "lab-lb"} <= {h for h, _ in merged(RUNS[0]).expect}
    assert run.output.count(REFUSED) <= 2, "more than one refusal"  # the error line and msg


@pytest.mark.parametrize("name", ["lab", *(f"scenario-{s}" for s in SCENARIOS)])
def test_a_good_inventory_passes(runs, name):
    run = runs[f"good-{name}"]
    assert run.rc == 0, run.output
    assert "Preflight passed for" in run.output, run.output
    assert_reached_no_host(run)
