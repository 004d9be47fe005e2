"""Fixtures for the default scenario: one testinfra host per test host, through podman.

testinfra's podman backend runs each command with one `podman exec`; molecule's default
(the Ansible backend) would start Ansible for every command.
"""

from __future__ import annotations

import os

import pytest
import roboshop_testlib
import testinfra

PROJECT = roboshop_testlib.PROJECT
# Other scenarios (rocky9, rocky8) run these tests against their own containers.
PREFIX = os.environ.get("ROBOSHOP_HOST_PREFIX", "")


@pytest.fixture(scope="session")
def lab_vars() -> dict:
    """The inventory values the scenario converged with (what the hosts must show)."""
    return roboshop_testlib.lab_vars()


def _host(name: str):
    return testinfra.get_host(f"podman://{PREFIX}{name}")


@pytest.fixture(scope="session")
def payment():
    return _host("payment")


@pytest.fixture(scope="session")
def rabbitmq():
    return _host("rabbitmq")


@pytest.fixture(scope="session")
def stubs():
    return _host("stubs")


@pytest.fixture()
def take_order():
    """Take an order from the `orders` queue by orderid (as the lab's orders reader)."""
    return lambda orderid: roboshop_testlib.take_order(f"{PREFIX}payment", orderid)


def pytest_terminal_summary(terminalreporter):
    roboshop_testlib.report_verify_duration(terminalreporter)
