"""Security checks on the converged payment host (and in the converge's own log)."""

from __future__ import annotations

import os
import re
from pathlib import Path

MAX_EXPOSURE = 2.5


def test_service_never_runs_as_root(payment):
    assert payment.check_output("systemctl show --property=User --value payment.service") == (
        "roboshop"
    )
    main_pid = payment.check_output("systemctl show --property=MainPID --value payment.service")
    assert int(main_pid) > 0, "payment is not running"
    # real, effective and saved uid of the uWSGI master and every worker
    rows = payment.check_output("ps -o ruid=,euid=,suid=,comm= --ppid %s -p %s", main_pid, main_pid)
    processes = [line.split() for line in rows.splitlines()]
    assert len(processes) >= 2, rows
    for ruid, euid, suid, comm in processes:
        assert "0" not in (ruid, euid, suid), f"{comm} has uid 0: {ruid}/{euid}/{suid}"
    assert payment.user("roboshop").uid != 0


def test_systemd_exposure_score(payment):
    out = payment.check_output("systemd-analyze security --no-pager payment.service")
    match = re.search(r"Overall exposure level for payment\.service:\s*([0-9.]+)", out)
    assert match, out
    score = float(match.group(1))
    print(f"systemd-analyze security payment.service: {score}")
    assert score <= MAX_EXPOSURE, out


def test_env_file_mode_and_owner(payment, lab_vars):
    env_file = payment.file("/etc/roboshop/payment.env")
    assert env_file.is_file
    assert (env_file.user, env_file.group, env_file.mode) == ("root", "root", 0o600)
    config_dir = payment.file("/etc/roboshop")
    assert config_dir.user == "root"
    assert config_dir.mode & 0o007 == 0, oct(config_dir.mode)
    # only root reads it: not the service user, not anyone else
    assert payment.run("runuser -u roboshop -- cat /etc/roboshop/payment.env").rc != 0
    assert payment.run("runuser -u nobody -- cat /etc/roboshop/payment.env").rc != 0
    # ... and yet the running service got its secret from it (systemd reads it as root);
    # test_default's /health (broker connected) and real payment show it logs in with it
    main_pid = payment.check_output("systemctl show --property=MainPID --value payment.service")
    assert int(main_pid) > 0
    environ = payment.check_output("tr '\\0' '\\n' < /proc/%s/environ", main_pid).splitlines()
    assert f"AMQP_PASS={lab_vars['vault_roboshop_amqp_password']}" in environ


def test_password_absent_from_systemctl_show_and_unit(payment, lab_vars):
    password = lab_vars["vault_roboshop_amqp_password"]
    assert password in payment.file("/etc/roboshop/payment.env").content_string  # really set
    assert password not in payment.check_output("systemctl show payment.service")
    assert password not in payment.check_output("systemctl cat payment.service")
    assert password not in payment.file("/etc/systemd/system/payment.service").content_string


def test_password_absent_from_the_converge_log(lab_vars):
    password = lab_vars["vault_roboshop_amqp_password"]
    log = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "ansible.log"
    text = log.read_text()
    # really the converge's log (molecule.yml: ANSIBLE_LOG_PATH), with its diffs
    assert "Write the secrets file" in text
    assert "Write the systemd unit" in text
    assert "PLAY RECAP" in text
    assert password not in text
