"""Fixtures for the failures scenario: the hosts through testinfra's podman backend."""

from __future__ import annotations

import pytest
import roboshop_testlib as lib


@pytest.fixture(scope="session")
def payment():
    return lib.host("fail-payment")


@pytest.fixture(scope="session")
def rabbitmq():
    return lib.host("fail-rabbitmq")


@pytest.fixture(scope="session")
def stubs():
    return lib.host("fail-stubs")


def pytest_terminal_summary(terminalreporter):
    lib.report_verify_duration(terminalreporter)
