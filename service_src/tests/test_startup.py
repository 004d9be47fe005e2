"""uWSGI refuses to serve a service that cannot work, and says why (payment.ini: need-app):
no AMQP_PASS, or the app loaded in the master before fork (lazy-apps off). No broker needed."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import SERVICE_SRC, UWSGI, Payment, Stubs, make_payment


def run_until_exit(payment: Payment, ini: Path, timeout: float = 30.0) -> tuple[int, str]:
    with payment.log.open("ab") as out:
        proc = subprocess.run(
            [str(UWSGI), "--ini", str(ini)],
            cwd=SERVICE_SRC,
            env=payment.env,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=timeout,
            check=False,
        )
    return proc.returncode, payment.log.read_text()


@pytest.fixture
def payment(stubs: Stubs):
    payment = make_payment(stubs)
    yield payment
    shutil.rmtree(payment.state_dir, ignore_errors=True)


def test_no_amqp_pass_stops_uwsgi_naming_it(payment: Payment) -> None:
    del payment.env["AMQP_PASS"]
    code, log = run_until_exit(payment, SERVICE_SRC / "payment.ini")
    assert code != 0
    assert "ConfigError: AMQP_PASS is not set" in log
    assert "need-app requested, destroying the instance" in log


def test_the_app_is_not_built_before_fork(payment: Payment) -> None:
    ini = payment.state_dir / "no-lazy-apps.ini"  # payment.ini, with lazy-apps off
    ini.write_text(f"[uwsgi]\nini = {SERVICE_SRC / 'payment.ini'}\nlazy-apps = false\n")
    code, log = run_until_exit(payment, ini)
    assert code != 0
    assert "payment.wsgi is loaded in the uWSGI master, before fork: set lazy-apps = true" in log
