"""Building the app in process: `create_app` starts nothing (no thread, no connection), the
per-worker resources start once per process, the settings' defaults agree with the payment
role's, and pyproject.toml declares requirements.txt's dependencies. No RabbitMQ, no socket."""

from __future__ import annotations

import os
import re
import tempfile
import threading
from pathlib import Path
from typing import Any

import pytest
import tomllib
import yaml
from inproc import (
    FakeBroker,
    FakeDeps,
    FakePublisher,
    World,
    offline,  # noqa: F401  (a fixture, used by pytestmark)
)
from payment import __version__, ops
from payment.app import create_app
from payment.config import ConfigError, Settings
from payment.records import CHARGED, Records

pytestmark = pytest.mark.usefixtures("offline")

SERVICE_SRC = Path(__file__).resolve().parents[1]
ROLE_DEFAULTS = SERVICE_SRC.parent / "roles" / "payment" / "defaults" / "main.yml"


def settings(**overrides: Any) -> Settings:
    return Settings(state_dir=tempfile.mkdtemp(prefix="payment-inproc-"), **overrides)


def test_building_the_app_starts_nothing() -> None:
    """The real Service (real Deps and Publisher): no thread, no connection until started."""
    before = set(threading.enumerate())
    app = create_app(settings(amqp_pass="secret"), threads=4)
    service = app.extensions["payment"]
    client = app.test_client()
    assert client.get("/health/live").get_json() == {"status": "ok"}  # touches nothing
    assert set(threading.enumerate()) == before
    assert not hasattr(service, "publisher") and not hasattr(service, "drainer")


def test_the_resources_start_once_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[FakePublisher] = []
    broker = FakeBroker()

    def factory(*_a: object, **_k: object) -> FakePublisher:
        made.append(FakePublisher(broker))
        return made[-1]

    app = create_app(settings(), deps=FakeDeps(), publisher_factory=factory, start_threads=False)
    service = app.extensions["payment"]
    client = app.test_client()
    assert made == []
    assert client.get("/health").status_code == 200  # a route that needs them starts them
    service.ensure_started()
    assert len(made) == 1 and service.publisher is made[0]
    pid = os.getpid()
    monkeypatch.setattr(os, "getpid", lambda: pid + 1)  # as in a forked child
    service.ensure_started()
    assert len(made) == 2 and service.publisher is made[1]


def test_no_broker_password_no_service() -> None:
    with pytest.raises(ConfigError, match=r"^AMQP_PASS is not set") as raised:
        create_app(settings())
    assert "'roboshop' (AMQP_USER)" in str(raised.value)
    with pytest.raises(ConfigError, match="AMQP_PASS"):
        create_app(Settings.from_env({"AMQP_PASS": "", "PAYMENT_STATE_DIR": "/nonexistent"}))
    # with a fake broker (the tests) no password is needed
    World()


def test_ops_republish_without_a_password_changes_nothing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    s = settings()
    records = Records(s.state_dir)
    records.create("o-1", "stan", "k1", "fp", b'{"orderid": "o-1"}', "req-1")
    assert records.charged("o-1", 0.0)
    assert ops.main(["list", "--state", "charged"], s) == 0  # reading needs no broker
    assert "o-1" in capsys.readouterr().out
    assert ops.main(["republish", "o-1"], s) == 2
    assert "AMQP_PASS is not set" in capsys.readouterr().err
    assert records.get("o-1").state == CHARGED


def test_defaults_agree_with_the_payment_role() -> None:
    """The role sets every one of these explicitly; run alone, the service behaves the same."""
    role = yaml.safe_load(ROLE_DEFAULTS.read_text())
    defaults = Settings.from_env({})
    assert defaults.amqp_user == role["payment_amqp_user"] == "roboshop"
    assert defaults.amqp_pass == ""  # no default password: required at start (above)
    assert defaults.health_require_broker is role["payment_health_require_broker"] is True
    assert (
        Settings.from_env({"PAYMENT_HEALTH_REQUIRE_BROKER": "false"}).health_require_broker is False
    )


def test_the_claim_lease_and_pending_age_cover_the_steps_before_the_charge() -> None:
    """A key's in-flight claim lasts as long as the steps from the claim to the charge can
    take (+ 5 s), not a fixed 120 s: a worker that died before charging blocks the customer's
    retries that long. A `pending` record is old (its worker gone) only once those steps and
    the charge itself have surely ended."""
    s = Settings.from_env({})
    assert s.before_charge == 3 * s.connect_timeout + 2 * s.read_timeout == 13.0
    assert s.claim_lease == 18
    assert s.charge_age == s.connect_timeout + s.gateway_timeout + 5.0 == 16.0
    assert s.pending_age == s.before_charge + s.charge_age == 29.0
    slow = Settings.from_env({"PAYMENT_READ_TIMEOUT": "30", "PAYMENT_DELAY_MS": "1000"})
    assert slow.claim_lease == 1 + 3 + 60 + 5
    assert Settings.from_env({"PAYMENT_IDEMPOTENCY_LEASE": "7"}).claim_lease == 7
    with pytest.raises(ConfigError):
        Settings.from_env({"PAYMENT_IDEMPOTENCY_LEASE": "0"})
    world = World()
    assert world.service.idempotency.lease == world.service.settings.claim_lease == 60


def test_pyproject_declares_requirements_txt() -> None:
    """pyproject.toml's dependencies are requirements.txt's lines (the deploy input)."""
    project = tomllib.loads((SERVICE_SRC / "pyproject.toml").read_text())["project"]
    lines = (SERVICE_SRC / "requirements.txt").read_text().splitlines()
    required = [line.strip() for line in lines if line.strip() and not line.startswith("#")]

    def normalized(specs: list[str]) -> list[str]:
        return sorted(re.sub(r"[-_.]+", "-", spec.lower()) for spec in specs)

    assert normalized(project["dependencies"]) == normalized(required)
    assert project["dynamic"] == ["version"] and __version__
    assert project["requires-python"] == ">=3.9"


def test_an_idempotency_ttl_shorter_than_a_payment_is_refused() -> None:
    """The `charging` marker lives for the TTL: it must outlive any charge (pending_age), or a
    retry could claim the key again while the first charge still runs."""
    env = {"PAYMENT_IDEMPOTENCY_TTL": "20"}
    with pytest.raises(ConfigError, match="PAYMENT_IDEMPOTENCY_TTL"):
        Settings.from_env(env)
    assert Settings.from_env({"PAYMENT_IDEMPOTENCY_TTL": "60"}).idempotency_ttl == 60
