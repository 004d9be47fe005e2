"""Fixtures for the tls scenario: the hosts through testinfra's podman backend, and the lab
CA's files on the controller (testing/lab/tls-ca.yml wrote them in this scenario's prepare)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import roboshop_testlib as lib


@pytest.fixture(scope="session")
def payment():
    return lib.host("tls-payment")


@pytest.fixture(scope="session")
def rabbitmq():
    return lib.host("tls-rabbitmq")


@pytest.fixture(scope="session")
def stubs():
    return lib.host("tls-stubs")


@pytest.fixture(scope="session")
def pki() -> Path:
    """The lab CA's directory (molecule.yml: ROBOSHOP_LAB_TLS_DIR)."""
    path = Path(os.environ.get("ROBOSHOP_LAB_TLS_DIR") or lib.PROJECT / ".cache/lab/tls")
    assert (path / "ca.pem").is_file(), f"no lab CA in {path}: the prepare makes it"
    return path


def pytest_terminal_summary(terminalreporter):
    lib.report_verify_duration(terminalreporter)
