"""Shared by the service tests and the service benchmark: loopback ports, a RoboShop cart."""

from __future__ import annotations

import socket
import time

# A cart as RoboShop's Cart service returns it: the one the stub Cart service serves.
from stubs.roboshop_stubs import SAMPLE_CART as CART

__all__ = ["CART", "free_port", "wait_port"]


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
