"""Shared by the service tests and the service benchmark: loopback ports, a RoboShop cart,
the local RabbitMQ, systemd socket activation (emulated)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

# A cart as RoboShop's Cart service returns it: the one the stub Cart service serves.
from stubs.roboshop_stubs import SAMPLE_CART as CART

__all__ = [
    "CART",
    "activated",
    "free_port",
    "listening_socket",
    "local_rabbitmq_pid",
    "start_local_rabbitmq",
    "wait_port",
]

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


# -- systemd socket activation, emulated ------------------------------------------------------
# What systemd does for a service started by a socket unit (payment.socket): the listening
# socket becomes fd 3 of the service's process, with LISTEN_FDS=1 and LISTEN_PID = that
# process's pid. This wrapper does it and execs the command, keeping its pid.
_ACTIVATE = """
import os, sys
fd = int(sys.argv[1])
os.dup2(fd, 3)
os.close(fd)
os.environ.update(LISTEN_FDS="1", LISTEN_PID=str(os.getpid()))
os.execv(sys.argv[2], sys.argv[2:])
"""


def listening_socket(port: int, host: str = "127.0.0.1", backlog: int = 128) -> socket.socket:
    """A listening TCP socket, held by the caller as systemd holds a socket unit's: it
    outlives the service, so connections made while none runs wait in its queue."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(backlog)
    return sock


def activated(listener: socket.socket, argv: list[str]) -> tuple[list[str], tuple[int, ...]]:
    """(argv, pass_fds) for subprocess.Popen: runs argv with `listener` as its fd 3, the way
    systemd starts a socket-activated service."""
    fd = listener.fileno()
    return [sys.executable, "-c", _ACTIVATE, str(fd), *argv], (fd,)
