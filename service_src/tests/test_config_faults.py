"""Settings an outside review (2026-12-02) found unchecked, in process (no uWSGI, no broker,
no socket connects). Each test failed on the code before its fix.

Claims attacked: a wrong setting stops the start with a ConfigError naming the variable
(never a silent default, never a crash later); /health and /metrics never answer 500; a
payment never answers 500; nothing the gateway was never sent becomes `unknown`.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from typing import Any

import pytest
from conftest import CART
from inproc import FakeBroker, FakeDeps, FakePublisher, World, offline  # noqa: F401 (fixture)
from payment.app import create_app
from payment.config import ConfigError, Settings
from payment.deps import Deps
from payment.drainer import Drainer
from payment.records import FAILED, Records

pytestmark = pytest.mark.usefixtures("offline")

HUGE = "1" + "0" * 400  # an integer int() reads, beyond float range


def _app(settings: Settings, deps: Any = None) -> Any:
    """The real app in process, the broker faked (no publisher thread)."""
    broker = FakeBroker()
    return create_app(
        settings,
        deps=deps,
        publisher_factory=lambda *a, **k: FakePublisher(broker),
        start_threads=False,
    )


def _pay(client: Any) -> Any:
    return client.post("/pay/anonymous-1", data=json.dumps(CART), content_type="application/json")


# -- 1. CART_HOST / USER_HOST / the gateway's host are never checked ---------------------------
@pytest.mark.parametrize(
    "name, value",
    [
        ("CART_HOST", "cart..internal"),
        ("USER_HOST", "user..internal"),
        ("PAYMENT_GATEWAY", "http://pay..example/charge"),
    ],
)
def test_a_host_name_with_an_empty_label_is_refused_at_start(name: str, value: str) -> None:
    """config.py: AMQP_HOST is checked (RFC 1123), CART_HOST, USER_HOST and the gateway's host
    are taken as they are. A doubled dot (or a label over 63 characters) makes every later
    connect raise UnicodeError (the idna codec), not an OSError: tests below."""
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({name: value})


def test_health_with_a_malformed_dependency_host_is_not_500() -> None:
    """deps.py probe: only _ConnectFailed/OSError are caught; `_open` raises UnicodeError
    from getaddrinfo, service.health does not catch it: every /health is a 500."""
    settings = Settings(
        state_dir=tempfile.mkdtemp(prefix="payment-r3-"),
        cart_host="cart..internal",
        user_host="user..internal",
        gateway_url="http://gateway.invalid/",
    )
    reply = _app(settings).test_client().get("/health")
    assert reply.status_code in (200, 503), reply.get_data()


def test_pay_with_a_malformed_user_host_is_not_500() -> None:
    """deps.py Deps.start / Host._take: the UnicodeError escapes start_user_check (which
    catches DependencyError only), and every POST /pay answers 500 (before any charge)."""
    settings = Settings(
        state_dir=tempfile.mkdtemp(prefix="payment-r3-"),
        cart_host="cart..internal",
        user_host="user..internal",
        gateway_url="http://gateway.invalid/",
    )
    reply = _pay(_app(settings).test_client())
    assert reply.status_code != 500, reply.get_data()


class RealGatewayDeps(FakeDeps):
    """User and cart faked; the charge is the real Deps.charge (http.client)."""

    def __init__(self, gateway_url: str) -> None:
        super().__init__()
        self.real = Deps(Settings(gateway_url=gateway_url, connect_timeout=0.05))

    def charge(self, request_id: str) -> None:
        self.gateway.calls.append(request_id)
        self.real.charge(request_id)


def test_a_gateway_host_that_cannot_be_resolved_is_not_an_unknown_charge() -> None:
    """deps.py _open catches OSError only: getaddrinfo's UnicodeError for a malformed gateway
    host comes out of Deps.charge as an unexpected error, and service.py (`except Exception`
    around the charge) records the payment `unknown` (504, for ops), although no byte of the
    charge left: every payment becomes an ops incident instead of a 503 `failed`."""
    world = World(deps=RealGatewayDeps("http://pay..example/charge"))
    reply = world.pay("anonymous-1")
    [record] = world.records().values()
    assert (reply.status, record.state) == (503, FAILED), (reply.status, record.state, record.note)


# -- 2. PAYMENT_GATEWAY is not a checked URL ----------------------------------------------------
@pytest.mark.parametrize("url", ["paypal.com/charge", "ftp://gw.example/", "http://gw:99999/"])
def test_a_gateway_url_that_is_not_http_is_refused(url: str) -> None:
    """config.py:165 takes any string. Without a scheme, deps.py charges http://localhost:80
    with the request target `paypal.com/charge` (a silent default); `ftp://` is charged as
    plain HTTP on port 80; a port out of range raises ValueError from create_app, not a
    ConfigError naming the variable."""
    with pytest.raises(ConfigError, match="PAYMENT_GATEWAY"):
        settings = Settings.from_env({"PAYMENT_GATEWAY": url})
        Deps(settings)


# -- 3. 16-bit fields without an upper bound -------------------------------------------------
@pytest.mark.parametrize("name", ["CART_PORT", "USER_PORT", "AMQP_PORT", "AMQP_HEARTBEAT"])
def test_a_value_beyond_16_bits_is_refused(name: str) -> None:
    """config.py _int has a minimum only. CART_PORT/USER_PORT=70000: getaddrinfo wraps it and
    the service connects to port 4464 (70000 - 65536); AMQP_HEARTBEAT=70000: pika's TuneOk
    cannot be encoded ('H' format), every broker connect fails later."""
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({name: "70000"})


# -- 4. infinite (or beyond TIMEOUT_MAX) intervals ---------------------------------------------
@pytest.mark.parametrize(
    "name, value",
    [
        ("PAYMENT_OUTBOX_POLL", "inf"),
        ("PAYMENT_OUTBOX_POLL", "1e10"),
        ("PAYMENT_PUBLISH_TIMEOUT", "inf"),
        ("PAYMENT_HEALTH_CACHE", "inf"),
    ],
)
def test_an_interval_no_wait_can_take_is_refused(name: str, value: str) -> None:
    """config.py _float refuses NaN but takes inf and anything above threading.TIMEOUT_MAX:
    Event.wait raises OverflowError (the drainer, the confirm wait), /health is cached for
    ever."""
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({name: value})


def test_the_drainer_outlives_its_poll_setting(tmp_path: Any) -> None:
    """drainer.py:66 `self._wake.wait(self._poll)` is outside the loop's try: with
    PAYMENT_OUTBOX_POLL=inf the drainer thread dies on its first wait (OverflowError), and no
    `charged` record is ever published or `pending` one made `unknown`."""
    try:
        settings = Settings.from_env({"PAYMENT_OUTBOX_POLL": "inf"})
    except ConfigError:
        return  # refused at start: fine
    drainer = Drainer(
        Records(str(tmp_path)),
        submit=lambda record: None,  # type: ignore[arg-type,return-value]
        connected=lambda: False,
        poll=settings.outbox_poll,
        lease=60.0,
        confirm_timeout=1.0,
        late_window=30.0,
        pending_age=30.0,
        retention=86400.0,
    )
    drainer.start()
    time.sleep(0.3)
    assert drainer._thread.is_alive()


# -- 5. integers beyond float range ----------------------------------------------------------
@pytest.mark.parametrize(
    "name", ["PAYMENT_IDEMPOTENCY_TTL", "PAYMENT_IDEMPOTENCY_LEASE", "PAYMENT_DELAY_MS"]
)
def test_an_integer_beyond_float_range_is_a_config_error(name: str) -> None:
    """config.py _int has no maximum. PAYMENT_DELAY_MS: from_env raises OverflowError
    (before_charge divides it), not ConfigError. TTL: accepted, then every /health, /metrics
    and /pay answers 500 (next test). LEASE: accepted, then SQLiteStore.begin's
    `now + lease` raises and every keyed payment is 503 for ever."""
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({name: HUGE})


def test_a_huge_ttl_does_not_make_health_500(tmp_path: Any) -> None:
    """service.py ensure_started: `float(settings.idempotency_ttl)` raises OverflowError on
    every call, from /health, /metrics and /pay alike."""
    try:
        settings = Settings.from_env(
            {"PAYMENT_IDEMPOTENCY_TTL": HUGE, "PAYMENT_STATE_DIR": str(tmp_path)}
        )
    except ConfigError:
        return
    client = _app(settings, deps=FakeDeps()).test_client()
    assert client.get("/health").status_code in (200, 503)


# -- 6. log level, Redis URL -----------------------------------------------------------------
@pytest.mark.parametrize("level", ["VERBOSE", "INFOO", "BASIC_FORMAT"])
def test_an_unknown_log_level_is_refused(level: str) -> None:
    """config.py:194 takes any word; logs.setup does `getattr(logging, level, INFO)`: a typo
    is silently INFO, and a name of the logging module that is not a level (BASIC_FORMAT)
    makes setLevel raise ValueError in wsgi.py, not a ConfigError."""
    with pytest.raises(ConfigError, match="PAYMENT_LOG_LEVEL"):
        Settings.from_env({"PAYMENT_LOG_LEVEL": level})


def test_a_malformed_redis_url_is_a_config_error(tmp_path: Any) -> None:
    """config.py:184 takes any string; redis.Redis.from_url raises ValueError ('Redis URL must
    specify one of the following schemes') from create_app: the start fails without naming
    PAYMENT_REDIS_URL."""
    env = {
        "PAYMENT_IDEMPOTENCY_BACKEND": "redis",
        "PAYMENT_REDIS_URL": "localhost:6379",
        "PAYMENT_STATE_DIR": str(tmp_path),
    }
    with pytest.raises(ConfigError, match="PAYMENT_REDIS_URL"):
        _app(Settings.from_env(env), deps=FakeDeps())


# -- 7. the state dir and the metrics dir ------------------------------------------------------
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to another user")
def test_an_unwritable_state_dir_is_a_config_error_naming_it() -> None:
    """Records opens payments.sqlite3 in PAYMENT_STATE_DIR at create_app: a directory the
    service user cannot write (here: root's 0755 dir, the app built as nobody in a forked
    child) stops the start with `sqlite3.OperationalError: unable to open database file`,
    which names neither the variable nor the directory."""
    base = tempfile.mkdtemp(prefix="payment-r3-")  # pytest's tmp_path is 0700: not traversable
    os.chmod(base, 0o755)
    state = os.path.join(base, "state")
    os.mkdir(state, 0o755)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never returns into pytest
        try:
            os.setgid(65534)
            os.setuid(65534)
            try:
                _app(Settings(state_dir=state), deps=FakeDeps())
                out = "started"
            except Exception as exc:
                out = f"{type(exc).__name__}: {exc}"
            os.write(write, out.encode()[:2000])
        finally:
            os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    with os.fdopen(read) as f:
        outcome = f.read()
    assert outcome.startswith("ConfigError") and "PAYMENT_STATE_DIR" in outcome, outcome


def test_metrics_with_the_multiprocess_dir_gone_is_not_500(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    """metrics.py:74 MultiProcessCollector raises ValueError when PROMETHEUS_MULTIPROC_DIR is
    not a directory (removed under the running service: /run cleaned, another master's
    worker): /metrics (text and JSON) answers 500, although writes to the metrics are
    guarded everywhere."""
    world = World()
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "gone"))
    text = world.client.get("/metrics")
    summary = world.client.get("/metrics", headers={"Accept": "application/json"})
    for reply in (text, summary):  # unavailable, said in JSON; never a 500
        assert reply.status_code in (200, 503), reply.get_data()
        if reply.status_code == 503:
            assert reply.get_json()["status"] == "error"
