"""Shared by the service tests and the service benchmark: loopback ports, a RoboShop cart."""

from __future__ import annotations

import socket
import time

# A cart as RoboShop's Cart service returns it (one item plus the SHIP line).
CART = {
    "total": 1131.0,
    "tax": 188.5,
    "items": [
        {"qty": 1, "sku": "HAL-1", "name": "HAL", "price": 1000, "subtotal": 1000},
        {"qty": 1, "sku": "SHIP", "name": "shipping to Brno", "price": 131, "subtotal": 131},
    ],
}


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
