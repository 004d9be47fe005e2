"""Fixtures for the cluster scenario: the hosts through testinfra's podman backend."""

from __future__ import annotations

import pytest
import roboshop_testlib as lib

LB = "cl-lb"
PAYMENT_HOSTS = ("cl-payment1", "cl-payment2")
BROKERS = ("cl-rabbitmq1", "cl-rabbitmq2", "cl-rabbitmq3")
STUBS = "cl-stubs"


@pytest.fixture(scope="session")
def payments():
    return {name: lib.host(name) for name in PAYMENT_HOSTS}


@pytest.fixture(scope="session")
def stubs():
    return lib.host(STUBS)


def pytest_terminal_summary(terminalreporter):
    lib.report_verify_duration(terminalreporter)
