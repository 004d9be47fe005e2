"""The payment unit (roles/payment/templates/payment.service.j2), rendered by the
controller's Ansible as the role renders it, for a host whose facts give a systemd version:

- Environment= lines: a value is quoted and escaped on one line, and a value holding a line
  break (which would end the directive and inject others, e.g. an ExecStartPre=) is
  refused, naming the variable;
- hardening: a directive is written only where the host's systemd knows it (the role's
  payment_unit_min_systemd): RHEL 8's 239 gets none newer than 239, Debian 12's and RHEL 9's
  252 and Debian 13's 257 get all of them; a missing or non-integer version is refused."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
ROLE = ROOT / "roles/payment"
PLAY = f"""
- hosts: localhost
  gather_facts: false
  vars_files: [{ROLE}/defaults/main.yml, {ROLE}/vars/main.yml]
  tasks:
    # What the setup module's `systemd` collector gives (cacheable: an ansible_facts key).
    - ansible.builtin.set_fact:
        systemd: "{{{{ fake_systemd }}}}"
        cacheable: true
      when: fake_systemd is defined
    - ansible.builtin.debug:
        msg: "{{{{ lookup('ansible.builtin.template', '{ROLE}/templates/payment.service.j2') }}}}"
"""


def render(tmp_path: Path, systemd: object = 252, **values: object) -> subprocess.CompletedProcess:
    """Render for a host whose systemd version fact is `systemd` (None: no such fact)."""
    play = tmp_path / "render.yml"
    play.write_text(PLAY)
    extra = {"payment_cart_host": "cart", "payment_user_host": "user",
             "payment_amqp_hosts": ["rabbitmq"], **values}  # fmt: skip
    if systemd is not None:
        extra["fake_systemd"] = {"version": systemd, "features": "+PAM"}
    # cwd: not the repository, whose ansible.cfg would cache these facts in .cache/facts.
    return subprocess.run(
        [str(Path(sys.executable).parent / "ansible-playbook"), "-i", "localhost,",
         "-c", "local", str(play), "-e", json.dumps(extra)],
        capture_output=True, text=True, timeout=120, check=False, cwd=tmp_path,
        env={"ANSIBLE_NOCOLOR": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )  # fmt: skip


def unit(tmp_path: Path, systemd: object) -> list[str]:
    """The rendered unit's lines (the debug task's msg)."""
    out = render(tmp_path, systemd)
    assert out.returncode == 0, out.stdout + out.stderr
    match = re.search(r'^    "msg": (".*")$', out.stdout, re.MULTILINE)
    assert match, out.stdout
    return json.loads(match.group(1)).splitlines()


# The hardening block as the template wrote it for every host before it read the systemd
# version (and as the Debian 12 lab's systemd 252 still gets it, in this order).
HARDENING = """\
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
DevicePolicy=closed
PrivateUsers=yes
ProtectHostname=yes
ProtectClock=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectProc=invisible
ProcSubset=pid
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
MemoryDenyWriteExecute=yes
RemoveIPC=yes
KeyringMode=private
CapabilityBoundingSet=
AmbientCapabilities=
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallFilter=~@privileged @resources
SystemCallErrorNumber=EPERM""".splitlines()
# Newer than RHEL 8's systemd 239 (systemd's NEWS: 242, 245, 244, 247, 247, 242).
NEWER_THAN_239 = {"ProtectHostname", "ProtectClock", "ProtectKernelLogs", "ProtectProc",
                  "ProcSubset", "RestrictSUIDSGID"}  # fmt: skip


def hardening_block(lines: list[str]) -> list[str]:
    start = lines.index("# Hardening (systemd-analyze security payment.service).") + 1
    return lines[start : lines.index("", start)]


@pytest.mark.parametrize("version", [252, 257])
def test_systemd_252_and_newer_get_every_hardening_directive(tmp_path: Path, version: int) -> None:
    assert hardening_block(unit(tmp_path, version)) == HARDENING


def test_systemd_239_gets_no_directive_newer_than_239(tmp_path: Path) -> None:
    block = hardening_block(unit(tmp_path, 239))
    names = {line.split("=")[0] for line in block if not line.startswith("#")}
    assert not names & NEWER_THAN_239, block
    # ... and every other one, in the same order, after one line naming what was left out.
    kept = [line for line in HARDENING if line.split("=")[0] not in NEWER_THAN_239]
    assert block[1:] == kept
    assert block[0].startswith("# Left out, newer than this host's systemd 239: ")
    assert all(f"{name}= (" in block[0] for name in NEWER_THAN_239), block[0]


@pytest.mark.parametrize(
    ("systemd", "message"),
    [
        (None, "ansible_facts['systemd']['version'] is missing"),
        ("252", "ansible_facts['systemd']['version'] is \\\"252\\\", not an integer"),
        (True, "ansible_facts['systemd']['version'] is true, not an integer"),
    ],
)
def test_a_missing_or_non_integer_version_is_refused(
    tmp_path: Path, systemd: object, message: str
) -> None:
    out = render(tmp_path, systemd)
    assert out.returncode != 0
    assert message in out.stdout + out.stderr, out.stdout + out.stderr
    assert "NoNewPrivileges=yes" not in out.stdout


def test_a_directive_without_a_minimum_version_is_refused(tmp_path: Path) -> None:
    table = yaml.safe_load((ROLE / "vars/main.yml").read_text())["payment_unit_min_systemd"]
    del table["LockPersonality"]
    out = render(tmp_path, 252, payment_unit_min_systemd=table)
    assert out.returncode != 0
    assert "LockPersonality= has no minimum systemd version" in out.stdout + out.stderr


def test_the_table_holds_exactly_the_hardening_directives() -> None:
    table = yaml.safe_load((ROLE / "vars/main.yml").read_text())["payment_unit_min_systemd"]
    assert set(table) == {line.split("=")[0] for line in HARDENING}
    assert {name for name, version in table.items() if version > 239} == NEWER_THAN_239


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
