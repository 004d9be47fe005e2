"""The deploy reached the hosts the way ops reach production: SSH as the unprivileged `ops`
account, then sudo; never as root and never through `podman exec`.

Evidence from the hosts' own journals: sshd logs each login, sudo each escalation. A converge
through `podman exec` (molecule's default connection) leaves neither: no sshd login and no
sudo line on the payment and rabbitmq hosts (only testing/provision.yml, which places the key,
uses podman exec, and it runs no sudo). A converge as root over SSH is refused by sshd
(PermitRootLogin no) and would log no sudo either.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# The deploy runs far more than this many tasks per host (converge, check, idempotence).
MIN_ESCALATIONS = 30


# Who ops may become: root, and on payment hosts the service user (the new venv's checks).
BECOME_USERS = {"payment": {"root", "roboshop"}, "rabbitmq": {"root"}}


@pytest.fixture(params=["payment", "rabbitmq"])
def deployed(request):
    host = request.getfixturevalue(request.param)
    host.become_users = BECOME_USERS[request.param]
    return host


def _escalations(host) -> list[str]:
    lines = host.check_output("journalctl --no-pager -o cat -t sudo").splitlines()
    return [line for line in lines if "BECOME-SUCCESS" in line]


def test_logins_are_ops_over_ssh_with_a_key(deployed):
    log = deployed.check_output("journalctl --no-pager -o cat -t sshd")
    assert "Accepted publickey for ops" in log
    assert "for root" not in log
    assert "Accepted password" not in log


def test_every_escalation_is_ops_to_root_through_sudo(deployed):
    escalations = _escalations(deployed)
    assert len(escalations) >= MIN_ESCALATIONS, escalations[-5:]
    assert all(line.lstrip().startswith("ops :") for line in escalations), escalations[:3]
    users = {line.split("USER=", 1)[1].split(" ;")[0] for line in escalations}
    assert "root" in users
    assert users <= deployed.become_users, users


def test_new_venv_is_checked_as_the_service_user(payment):
    """uwsgi --version and pip check of a new release ran as roboshop (become_user over
    ops's sudo), as the service will run that venv."""
    as_service_user = [line for line in _escalations(payment) if "USER=roboshop" in line]
    assert len(as_service_user) >= 2, as_service_user


def test_root_cannot_log_in_and_ops_has_no_password(deployed):
    assert "permitrootlogin no" in deployed.check_output("sshd -T").splitlines()
    assert "passwordauthentication no" in deployed.check_output("sshd -T").splitlines()
    # '!' or '*': a locked password, no password login exists for ops
    shadow = deployed.check_output("getent shadow ops").split(":")
    assert shadow[1] in ("!", "*", "!*")


def test_no_deprecation_warning_in_the_deploy_log():
    """Every playbook molecule ran here (check, converge, idempotence: the real site.yml with
    the project's roles) is logged to ANSIBLE_LOG_PATH (.config/molecule/config.yml). What
    ansible-core deprecates is fixed before it breaks: not one deprecation warning."""
    log = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "ansible.log"
    text = log.read_text()
    assert "PLAY RECAP" in text  # the deploy's log, not an empty file
    warnings = [line for line in text.splitlines() if "DEPRECATION WARNING" in line]
    assert warnings == []
