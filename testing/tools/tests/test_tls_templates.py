"""AMQPS (optional TLS) in what the roles write, rendered by the controller's Ansible with the
lab inventory and group_vars/all.yml's wiring, as site.yml renders it (no host is reached):

- off (every existing inventory): rabbitmq.conf and the payment unit are what they were, no
  TLS line in either;
- roboshop_amqp_tls_enabled: a TLS listener on 5671 with the files under /etc/rabbitmq/tls/,
  server authentication only; payment's unit gets AMQP_TLS=true, AMQP_PORT=5671 and
  AMQP_CA_FILE=/etc/roboshop/amqp-ca.pem;
- roboshop_amqp_tls_only: no plain listener; roboshop_amqp_tls_port moves both ends."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
PAYMENT, RABBITMQ = ROOT / "roles/payment", ROOT / "roles/rabbitmq"
PLAY = f"""
- hosts: lab-payment:lab-rabbitmq
  gather_facts: false
  vars_files:
    - {PAYMENT}/defaults/main.yml
    - {PAYMENT}/vars/main.yml
    - {RABBITMQ}/defaults/main.yml
    - {RABBITMQ}/vars/main.yml
    - {ROOT}/group_vars/all.yml
  tasks:
    - ansible.builtin.set_fact:
        systemd: {{version: 252, features: "+PAM"}}
        cacheable: true
    - ansible.builtin.debug:
        msg: "{{{{ lookup('ansible.builtin.template', templates + '/payment.service.j2') }}}}"
      vars:
        templates: {PAYMENT}/templates
      when: inventory_hostname == 'lab-payment'
    - ansible.builtin.debug:
        msg: "{{{{ lookup('ansible.builtin.template', templates + '/rabbitmq.conf.j2') }}}}"
      vars:
        templates: {RABBITMQ}/templates
      when: inventory_hostname == 'lab-rabbitmq'
"""
CA = "-----BEGIN CERTIFICATE-----\nMIIBlab\n-----END CERTIFICATE-----\n"
TLS_ON = {"roboshop_amqp_tls_enabled": True, "roboshop_amqp_tls_ca": CA,
          "roboshop_amqp_tls_cert": CA}  # fmt: skip


def render(tmp_path: Path, **values: object) -> dict[str, list[str]]:
    """{'unit': payment.service lines, 'conf': rabbitmq.conf lines} for these inventory values."""
    play = tmp_path / "render.yml"
    play.write_text(PLAY)
    out = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(ROOT / "inventory/lab"),
         str(play), "-e", json.dumps(values)],
        capture_output=True, text=True, timeout=120, check=False, cwd=tmp_path,
        env={"ANSIBLE_NOCOLOR": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
             "ANSIBLE_FILTER_PLUGINS": str(ROOT / "plugins/filter")},
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    found = {}
    for host, key in (("lab-payment", "unit"), ("lab-rabbitmq", "conf")):
        match = re.search(rf'^ok: \[{host}\] => {{\n    "msg": (".*")\n}}', out.stdout, re.M)
        assert match, out.stdout
        found[key] = json.loads(match.group(1)).splitlines()
    return found


def env(unit: list[str]) -> dict[str, str]:
    pairs = (re.fullmatch(r'Environment="([A-Z_]+)=(.*)"', line) for line in unit)
    return {m.group(1): m.group(2) for m in pairs if m}


def test_off_by_default_nothing_changes(tmp_path: Path) -> None:
    r = render(tmp_path)
    assert "listeners.tcp.default = 5672" in r["conf"]
    assert not [line for line in r["conf"] if "ssl" in line or "listeners.tcp = none" in line]
    e = env(r["unit"])
    assert e["AMQP_PORT"] == "5672"
    assert "AMQP_TLS" not in e and "AMQP_CA_FILE" not in e


def test_tls_on(tmp_path: Path) -> None:
    r = render(tmp_path, **TLS_ON)
    for line in [
        "listeners.tcp.default = 5672",  # the plain listener stays (not tls_only)
        "listeners.ssl.default = 5671",
        "ssl_options.cacertfile = /etc/rabbitmq/tls/ca.pem",
        "ssl_options.certfile = /etc/rabbitmq/tls/cert.pem",
        "ssl_options.keyfile = /etc/rabbitmq/tls/key.pem",
        "ssl_options.verify = verify_none",
        "ssl_options.fail_if_no_peer_cert = false",
    ]:
        assert line in r["conf"], r["conf"]
    e = env(r["unit"])
    assert (e["AMQP_TLS"], e["AMQP_PORT"], e["AMQP_CA_FILE"]) == (
        "true", "5671", "/etc/roboshop/amqp-ca.pem",
    )  # fmt: skip
    assert e["AMQP_HOST"] == "rabbitmq"  # the name the broker's certificate must carry


def test_tls_only_and_another_port(tmp_path: Path) -> None:
    r = render(tmp_path, **TLS_ON, roboshop_amqp_tls_only=True, roboshop_amqp_tls_port=15671)
    assert "listeners.tcp = none" in r["conf"]
    assert not [line for line in r["conf"] if line.startswith("listeners.tcp.default")]
    assert "listeners.ssl.default = 15671" in r["conf"]
    assert env(r["unit"])["AMQP_PORT"] == "15671"


@pytest.mark.parametrize("port", [5673, "5673"])
def test_an_explicit_plain_port_is_not_used_for_tls(tmp_path: Path, port: object) -> None:
    """roboshop_amqp_port is the plain listener's; with TLS payment uses the TLS port."""
    r = render(tmp_path, **TLS_ON, roboshop_amqp_port=port)
    assert "listeners.tcp.default = 5673" in r["conf"]
    assert env(r["unit"])["AMQP_PORT"] == "5671"
