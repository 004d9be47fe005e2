"""Fixtures for the rolling scenario: the hosts through testinfra's podman backend."""

from __future__ import annotations

import pytest
import roboshop_testlib as lib

PAYMENT_HOSTS = ("roll-payment1", "roll-payment2")


@pytest.fixture(scope="session")
def payments():
    return {name: lib.host(name) for name in PAYMENT_HOSTS}


@pytest.fixture(scope="session")
def stubs():
    return lib.host("roll-stubs")


def pytest_terminal_summary(terminalreporter):
    lib.report_verify_duration(terminalreporter)
