"""Shared by the service tests and the service benchmark: loopback ports, a RoboShop cart,
the local RabbitMQ."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

# A cart as RoboShop's Cart service returns it: the one the stub Cart service serves.
from stubs.roboshop_stubs import SAMPLE_CART as CART

__all__ = ["CART", "free_port", "local_rabbitmq_pid", "start_local_rabbitmq", "wait_port"]

LOCAL_RABBITMQ = Path(__file__).resolve().parents[1] / "scripts" / "local-rabbitmq.sh"


def free_port() -> int:
    """A TCP port nothing listens on right now (127.0.0.1)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 10.0) -> None:
    """Wait until something accepts connections on 127.0.0.1:port, else TimeoutError."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


def start_local_rabbitmq(check: bool = True) -> None:
    """scripts/local-rabbitmq.sh start: boots the node, or starts its stopped application,
    and waits until it is up; a quick no-op when a broker answers already."""
    subprocess.run(
        ["bash", str(LOCAL_RABBITMQ), "start"],
        check=check,
        stdout=subprocess.DEVNULL,
        timeout=300,
    )


def local_rabbitmq_pid() -> int:
    """The OS pid of the local RabbitMQ node, by its own word: `pgrep beam.smp` would also
    match the brokers of test containers running on this machine."""
    out = subprocess.run(
        ["rabbitmqctl", "-q", "eval", "os:getpid()."],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    return int(out.strip().strip('"'))
