"""The payment unit's Environment= lines (roles/payment/templates/payment.service.j2),
rendered by the controller's Ansible as the role renders them: a value is quoted and
escaped on one line, and a value holding a line break (which would end the directive and
inject others, e.g. an ExecStartPre=) is refused, naming the variable."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
ROLE = ROOT / "roles/payment"
PLAY = f"""
- hosts: localhost
  gather_facts: false
  vars_files: [{ROLE}/defaults/main.yml, {ROLE}/vars/main.yml]
  tasks:
    - ansible.builtin.debug:
        msg: "{{{{ lookup('ansible.builtin.template', '{ROLE}/templates/payment.service.j2') }}}}"
"""


def render(tmp_path: Path, **values: object) -> subprocess.CompletedProcess:
    play = tmp_path / "render.yml"
    play.write_text(PLAY)
    extra = {"payment_cart_host": "cart", "payment_user_host": "user",
             "payment_amqp_hosts": ["rabbitmq"], **values}  # fmt: skip
    return subprocess.run(
        [str(Path(sys.executable).parent / "ansible-playbook"), "-i", "localhost,",
         "-c", "local", str(play), "-e", json.dumps(extra)],
        capture_output=True, text=True, timeout=120, check=False,
        env={"ANSIBLE_NOCOLOR": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )  # fmt: skip


def test_values_are_quoted_on_one_line(tmp_path: Path) -> None:
    out = render(tmp_path, payment_gateway_url='http://gw:8082/a"b%c')
    assert out.returncode == 0, out.stdout + out.stderr
    assert r"Environment=\"PAYMENT_GATEWAY=http://gw:8082/a\\\"b%%c\"" in out.stdout


@pytest.mark.parametrize(
    ("variable", "name", "value"),
    [
        ("payment_gateway_url", "PAYMENT_GATEWAY", "http://gw/\nExecStartPre=/bin/sh -c id"),
        ("payment_amqp_vhost", "AMQP_VHOST", "/\rx"),
        ("payment_amqp_hosts", "AMQP_HOST", ["rabbit1", "rabbit2\n"]),
    ],
)
def test_a_line_break_is_refused_naming_the_variable(
    tmp_path: Path, variable: str, name: str, value: object
) -> None:
    out = render(tmp_path, **{variable: value})
    assert out.returncode != 0
    assert f"{name} (payment role) holds a line break" in out.stdout + out.stderr
    assert "ExecStartPre" not in out.stdout.split("holds a line break")[0]
