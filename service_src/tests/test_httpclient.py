"""The service's keep-alive HTTP client against a real HTTP server with awkward answers
(chunked, no length, HTTP/1.0, Connection: close, early close) on a loopback port."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
from payment.httpclient import BadResponse, ConnectFailed, HostPool, ReadTimedOut

ANSWERS = {
    b"/len": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK",
    b"/chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"2\r\nOK\r\n3;x=1\r\n!!!\r\n0\r\nTrailer: 1\r\n\r\n",
    b"/close": b"HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 4\r\n\r\nnope",
    b"/nolength": b"HTTP/1.0 200 OK\r\n\r\nuntil-close",
    b"/continue": b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n",
    b"/truncated": b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc",
    b"/garbage": b"SSH-2.0-OpenSSH\r\n\r\n",
}


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[int, list[int]]]:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    port = listener.getsockname()[1]
    connections: list[int] = []

    def serve(conn: socket.socket) -> None:
        buf = b""
        with conn:
            while True:
                while b"\r\n\r\n" not in buf:
                    chunk = conn.recv(4096)
                    if not chunk:
                        return
                    buf += chunk
                head, _, buf = buf.partition(b"\r\n\r\n")
                path = head.split(b" ")[1]
                if path == b"/hang":
                    time.sleep(2)
                    return
                conn.sendall(ANSWERS[path])
                if path in (b"/close", b"/nolength", b"/truncated", b"/garbage"):
                    return

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            connections.append(1)
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    yield port, connections
    listener.close()


def test_keep_alive_reuses_one_connection(server: tuple[int, list[int]]) -> None:
    port, connections = server
    pool = HostPool("127.0.0.1", port, 1.0, 4)
    before = len(connections)
    for _ in range(5):
        assert pool.request("GET", "/len", {"X-Request-ID": "r"}, None, 1.0) == (200, b"OK")
    assert len(connections) == before + 1
    pool.close()


def test_awkward_answers(server: tuple[int, list[int]]) -> None:
    port, _ = server
    pool = HostPool("127.0.0.1", port, 1.0, 4)
    assert pool.request("GET", "/chunked", {}, None, 1.0) == (200, b"OK!!!")
    assert pool.request("DELETE", "/close", {}, None, 1.0) == (404, b"nope")
    assert pool.request("GET", "/nolength", {}, None, 1.0) == (200, b"until-close")
    assert pool.request("POST", "/continue", {}, b"{}", 1.0) == (201, b"")
    assert pool.request("GET", "/len", {}, None, 1.0) == (200, b"OK")  # still usable
    with pytest.raises(BadResponse):
        pool.request("GET", "/truncated", {}, None, 1.0)
    with pytest.raises(BadResponse):
        pool.request("GET", "/garbage", {}, None, 1.0)
    with pytest.raises(ReadTimedOut):
        pool.request("GET", "/hang", {}, None, 0.3)
    pool.close()


def test_refused_is_a_connect_failure() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: refused
        pool = HostPool("127.0.0.1", port, 0.5, 2)
        with pytest.raises(ConnectFailed) as info:
            pool.request("GET", "/", {}, None, 1.0)
    assert info.value.timed_out is False
