"""Fixtures: real RabbitMQ on localhost, the real stub servers and uWSGI on free loopback ports."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.client import HTTPConnection
from pathlib import Path
from typing import Any

import pika
import pytest

SERVICE_SRC = Path(__file__).resolve().parents[1]
ROOT = SERVICE_SRC.parent
STUBS = ROOT / "testing" / "stubs" / "roboshop_stubs.py"
UWSGI = Path(sys.executable).with_name("uwsgi")
# in-process tests import payment.metrics (multiprocess mode reads this at import)
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="payment-metrics-"))
# the payment package and testkit are importable: pyproject.toml's pythonpath (pytest)
from testkit import (  # noqa: E402  (CART, free_port, wait_port: re-exported to the tests)
    CART,
    activated,
    free_port,
    listening_socket,
    start_local_rabbitmq,
    wait_port,
)

# GET /metrics with Accept: application/json: the summary's keys (RoboShop's contract)
METRICS_SUMMARY_KEYS = {
    "total_payments",
    "successful_payments",
    "failed_payments",
    "success_rate",
    "uptime",
}
AMQP = pika.ConnectionParameters("127.0.0.1", 5672, "/", pika.PlainCredentials("guest", "guest"))


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    raw: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.raw)


def request(
    port: int,
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    timeout: float = 30.0,
) -> Reply:
    conn = HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        hdrs = dict(headers or {})
        data: bytes | None
        if body is None:
            data = None
        elif isinstance(body, bytes):
            data = body
        else:
            data = json.dumps(body).encode()
            hdrs.setdefault("Content-Type", "application/json")
        conn.request(method, path, body=data, headers=hdrs)
        resp = conn.getresponse()
        return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
    finally:
        conn.close()


# -- RabbitMQ ---------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def rabbitmq() -> None:
    try:
        wait_port(5672, timeout=0.5)
    except TimeoutError:
        start_local_rabbitmq()
    pika.BlockingConnection(AMQP).close()


def drain_queue(queue: str) -> list[tuple[pika.BasicProperties, dict[str, Any]]]:
    """Take every message from a queue (acked)."""
    conn = pika.BlockingConnection(AMQP)
    try:
        ch = conn.channel()
        out = []
        while True:
            method, props, body = ch.basic_get(queue, auto_ack=True)
            if method is None:
                return out
            out.append((props, json.loads(body)))
    finally:
        conn.close()


def queue_depth(queue: str) -> int:
    conn = pika.BlockingConnection(AMQP)
    try:
        return conn.channel().queue_declare(queue, passive=True).method.message_count
    finally:
        conn.close()


def delete_topology(exchange: str, queue: str) -> None:
    try:
        conn = pika.BlockingConnection(AMQP)
    except pika.exceptions.AMQPError:
        return
    try:
        ch = conn.channel()
        ch.queue_delete(queue)
        ch.exchange_delete(exchange)
    finally:
        conn.close()


# -- Redis ------------------------------------------------------------------------------------
class RedisServer:
    """A real redis-server (Debian's package) on a loopback port, without persistence; it can
    be stopped and started again on the same port (an outage that loses its data)."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        wait_port(self.port)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None


# -- stubs --------------------------------------------------------------------------------------
@dataclass
class Stub:
    role: str
    port: int
    proc: subprocess.Popen

    def mode(self, mode: str, **extra: Any) -> None:
        deadline = time.monotonic() + 15  # a "refuse" mode may still keep the port closed
        while True:
            try:
                reply = request(self.port, "POST", "/_mode", {"mode": mode, **extra})
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        assert reply.status == 200, reply.raw

    def calls(self) -> list[dict[str, Any]]:
        return request(self.port, "GET", "/_calls").json

    def reset(self) -> None:
        self.mode("ok")
        request(self.port, "DELETE", "/_calls")


@dataclass
class Stubs:
    cart: Stub
    user: Stub
    gateway: Stub

    def all(self) -> list[Stub]:
        return [self.cart, self.user, self.gateway]


@pytest.fixture(scope="session")
def stubs() -> Iterator[Stubs]:
    made = {}
    for role in ("cart", "user", "gateway"):
        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, str(STUBS), "--role", role, "--port", str(port)],
            stdout=subprocess.DEVNULL,
        )
        made[role] = Stub(role, port, proc)
    for stub in made.values():
        wait_port(stub.port)
    yield Stubs(**made)
    for stub in made.values():
        stub.proc.terminate()
        stub.proc.wait(10)


@pytest.fixture
def fresh_stubs(stubs: Stubs) -> Iterator[Stubs]:
    for stub in stubs.all():
        stub.reset()
    yield stubs
    for stub in stubs.all():
        stub.mode("ok")


# -- the service under uWSGI ------------------------------------------------------------------
@dataclass
class Payment:
    port: int
    exchange: str
    queue: str
    state_dir: Path
    log: Path
    env: dict[str, str]
    proc: subprocess.Popen | None = None
    extra: dict[str, str] = field(default_factory=dict)
    # systemd socket activation, emulated: the test holds the listening socket (as
    # payment.socket does) and uWSGI inherits it as fd 3 with LISTEN_FDS/LISTEN_PID; it
    # outlives stop() and start(), so connections made in between wait in its queue
    listener: socket.socket | None = None

    def pay(
        self,
        user: str = "anonymous-1",
        cart: Any = None,
        headers: dict[str, str] | None = None,
        timeout: float = 30.0,
    ) -> Reply:
        return request(
            self.port,
            "POST",
            f"/pay/{user}",
            CART if cart is None else cart,
            headers={"Content-Type": "application/json", **(headers or {})},
            timeout=timeout,
        )

    def get(self, path: str, headers: dict[str, str] | None = None) -> Reply:
        return request(self.port, "GET", path, headers=headers)

    def messages(self) -> list[tuple[pika.BasicProperties, dict[str, Any]]]:
        return drain_queue(self.queue)

    def activate(self) -> None:
        """Hold the listening socket from now on, as systemd's payment.socket does: start()
        hands it to uWSGI the way systemd does (fd 3, LISTEN_FDS=1, LISTEN_PID)."""
        self.listener = listening_socket(self.port, self.env.get("PAYMENT_BIND") or "0.0.0.0")

    def start(self) -> None:
        loaded_before = self._apps_loaded()
        out = self.log.open("ab")
        argv = [str(UWSGI), "--ini", str(SERVICE_SRC / "payment.ini")]
        pass_fds: tuple[int, ...] = ()
        if self.listener is not None:
            argv, pass_fds = activated(self.listener, argv)
        self.proc = subprocess.Popen(
            argv,
            cwd=SERVICE_SRC,
            env=self.env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            pass_fds=pass_fds,
        )
        wait_port(self.port, timeout=20)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            health = self.get("/health")
            if health.json.get("rabbitmq") == "connected":
                break
            time.sleep(0.1)
        else:
            raise TimeoutError(f"payment not connected to RabbitMQ: {health.raw!r}")
        # Every worker has loaded the app (lazy-apps: each after its fork). A `q` that comes
        # while a worker is still loading is lost for that worker (uWSGI 2.0.31), and the
        # graceful stop would wait for it; the unit's TimeoutStopSec ends such a stop.
        processes = int(self.env.get("PAYMENT_PROCESSES", "1"))
        while self._apps_loaded() < loaded_before + processes:
            if time.monotonic() > deadline:
                raise TimeoutError(f"not every one of {processes} workers loaded the app")
            time.sleep(0.05)

    def _apps_loaded(self) -> int:
        """How many times a worker has said it loaded the app, in this payment's log."""
        if not self.log.exists():
            return 0
        return self.log.read_text(errors="replace").count("WSGI app 0 (mountpoint='') ready")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.proc = None

    def stop_gracefully(self, timeout: float = 60.0) -> None:
        """`q` on the master FIFO (as the unit's ExecStop): each worker finishes its requests,
        then uWSGI exits. Needs PAYMENT_MASTER_FIFO in the environment."""
        assert self.proc is not None
        with open(self.env["PAYMENT_MASTER_FIFO"], "w") as fifo:
            fifo.write("q")
        self.proc.wait(timeout)
        self.proc = None

    def wait_outbox_empty(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            body = self.get("/health").json
            if body["outbox"]["pending"] == 0:
                return
            time.sleep(0.2)
        raise TimeoutError(f"outbox not drained: {body}")

    def metric(self, name: str, labels: str = "") -> float:
        text = self.get("/metrics").raw.decode()
        want = f"{name}{{{labels}}}" if labels else name
        total = 0.0
        for line in text.splitlines():
            if line.startswith("#"):
                continue
            key, _, value = line.rpartition(" ")
            if key == want:
                total += float(value)
        return total


def make_payment(stubs: Stubs, **overrides: str) -> Payment:
    tag = uuid.uuid4().hex[:8]
    state = Path(tempfile.mkdtemp(prefix="payment-test-"))
    port = free_port()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "CART_HOST": "127.0.0.1",
        "CART_PORT": str(stubs.cart.port),
        "USER_HOST": "127.0.0.1",
        "USER_PORT": str(stubs.user.port),
        "PAYMENT_GATEWAY": f"http://127.0.0.1:{stubs.gateway.port}/charge",
        "AMQP_HOST": "127.0.0.1",
        "AMQP_USER": "guest",
        "AMQP_PASS": "guest",
        "AMQP_EXCHANGE": f"test-shop-{tag}",
        "AMQP_QUEUE": f"test-orders-{tag}",
        "SHOP_PAYMENT_PORT": str(port),
        "PAYMENT_BIND": "127.0.0.1",
        "PAYMENT_STATE_DIR": str(state),
        "PAYMENT_PROCESSES": "2",
        "PAYMENT_THREADS": "4",
        "PAYMENT_CONNECT_TIMEOUT": "0.5",
        "PAYMENT_READ_TIMEOUT": "1",
        "PAYMENT_GATEWAY_TIMEOUT": "1",
        "PAYMENT_PUBLISH_TIMEOUT": "2",
        "PAYMENT_HEALTH_CACHE": "0",
        "PAYMENT_OUTBOX_POLL": "0.2",
    }
    env.update(overrides)
    return Payment(
        port=port,
        exchange=env["AMQP_EXCHANGE"],
        queue=env["AMQP_QUEUE"],
        state_dir=state,
        log=state / "uwsgi.log",
        env=env,
    )


@pytest.fixture(scope="module")
def payment_module(rabbitmq: None, stubs: Stubs) -> Iterator[Payment]:
    payment = make_payment(stubs)
    payment.start()
    yield payment
    payment.stop()
    delete_topology(payment.exchange, payment.queue)
    shutil.rmtree(payment.state_dir, ignore_errors=True)


@pytest.fixture
def payment(payment_module: Payment, fresh_stubs: Stubs) -> Payment:
    payment_module.messages()  # an empty queue for each test
    return payment_module
