"""Outbound HTTP (http.client) against a real loopback server with awkward peers: a charge never
goes out on a connection the gateway may have closed, is retried only when no byte of it
left, and a charge whose answer is lost is `read_timeout`/`protocol` (unknown), never retried."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
from payment.config import Settings
from payment.deps import DependencyError, Deps

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK"


class Server:
    """Per connection: answers requests; `behaviour` decides per (connection, request#)."""

    def __init__(self, behaviour: str) -> None:
        self.behaviour = behaviour
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self.connections = 0
        self.requests = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        buf = b""
        n = 0
        with conn:
            while True:
                while b"\r\n\r\n" not in buf:
                    chunk = conn.recv(4096)
                    if not chunk:
                        return
                    buf += chunk
                _, _, buf = buf.partition(b"\r\n\r\n")
                n += 1
                self.requests += 1
                if self.behaviour == "close-reused" and n > 1:
                    return  # an idle keep-alive closed by the peer as the request arrives
                if self.behaviour == "hang":
                    time.sleep(2)
                    return
                if self.behaviour == "reset":
                    return
                conn.sendall(OK)

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Iterator[Server]:
    s = Server(request.param)
    yield s
    s.close()


def deps_for(port: int) -> Deps:
    settings = Settings(
        cart_host="127.0.0.1",
        cart_port=port,
        user_host="127.0.0.1",
        user_port=port,
        gateway_url=f"http://127.0.0.1:{port}/charge",
        connect_timeout=0.5,
        read_timeout=0.5,
        gateway_timeout=0.3,
    )
    return Deps(settings, pool_size=4)


@pytest.mark.parametrize("server", ["close-reused"], indirect=True)
def test_a_charge_never_uses_a_kept_alive_connection(server: Server) -> None:
    deps = deps_for(server.port)
    for _ in range(3):
        deps.charge("r")  # raised `protocol` (a final 504) with the hand-written client
    assert server.connections == 3 and server.requests == 3


@pytest.mark.parametrize("server", ["ok"], indirect=True)
def test_cart_and_user_reuse_connections(server: Server) -> None:
    deps = deps_for(server.port)
    for _ in range(5):
        assert deps.delete_cart("anonymous-1", "r") == 200
    assert server.connections == 1


@pytest.mark.parametrize(("server", "kind"), [("hang", "read_timeout"), ("reset", "protocol")],
                         indirect=["server"])  # fmt: skip
def test_lost_answer_to_a_charge_is_unknown_and_not_retried(server: Server, kind: str) -> None:
    deps = deps_for(server.port)
    with pytest.raises(DependencyError) as info:
        deps.charge("r")
    assert info.value.kind == kind
    assert server.requests == 1  # sent once: never retried


@pytest.mark.parametrize("server", ["hang"], indirect=True)
def test_a_user_check_ends_within_the_bound_the_claim_lease_assumes(server: Server) -> None:
    """Settings.before_charge counts 2 reads (and 3 connects) for the user check: a hanging
    user service is asked twice (the GET retried once on a fresh connection), then the
    check fails, within that bound. Another retry here would outlast the claim's lease."""
    deps = deps_for(server.port)
    started = time.monotonic()
    check = deps.start_user_check("anonymous-1", "r")
    with pytest.raises(DependencyError) as info:
        check()
    elapsed = time.monotonic() - started
    assert info.value.kind == "read_timeout"
    assert server.requests == 2 and server.connections == 2
    assert 2 * deps.settings.read_timeout <= elapsed < deps.settings.before_charge


def test_refused_charge_left_nothing() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: refused
        with pytest.raises(DependencyError) as info:
            deps_for(port).charge("r")
    assert info.value.kind == "refused"
