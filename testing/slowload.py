"""Slow and idle HTTP clients, for the service tests and the benchmark: connections that hold
a server's attention without ever finishing a request ("slowloris": a request line, then one
header byte every interval), keep-alive connections that made one request and then stay
open, idle, as a client's connection pool does, and ("slowbody") complete headers announcing
a body that then comes one byte every interval.

The load keeps its numbers up like a determined client would: a connection the server closes
is opened again (and its request started again), so that the server always faces `slowloris`
+ `idle` open connections. One thread drives every socket (select), so the load costs
almost no CPU.
"""

from __future__ import annotations

import select
import socket
import threading
import time
from dataclasses import dataclass, field

__all__ = ["SlowLoad"]


@dataclass
class _Conn:
    kind: str  # "slowloris", "idle" or "slowbody"
    sock: socket.socket
    opened: float = field(default_factory=time.monotonic)


class SlowLoad:
    """`slowloris` + `idle` + `slowbody` connections to 127.0.0.1:port, kept open until
    stop()."""

    def __init__(
        self,
        port: int,
        slowloris: int = 48,
        idle: int = 48,
        interval: float = 1.0,
        slowbody: int = 0,
    ) -> None:
        self.port = port
        self.counts = {"slowloris": slowloris, "idle": idle, "slowbody": slowbody}
        self.interval = interval
        self.conns: list[_Conn] = []
        # connections the server closed (or refused), by kind; and the idle connections'
        # answers (each was answered once, then kept)
        self.closed = dict.fromkeys(self.counts, 0)
        self.answered = 0
        self.bytes_sent = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    # -- one connection --------------------------------------------------------------------------
    def _open(self, kind: str) -> _Conn | None:
        try:
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=2)
            sock.setblocking(False)
            if kind == "slowloris":
                # a request line and the start of a header line, never finished
                sock.send(b"POST /pay/slow HTTP/1.1\r\nHost: payment\r\nX-Slow: ")
            elif kind == "slowbody":
                # whole headers, then a body far longer than will ever come
                sock.send(
                    b"POST /pay/slow HTTP/1.1\r\nHost: payment\r\n"
                    b"Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{"
                )
            else:
                sock.send(b"GET /health/live HTTP/1.1\r\nHost: payment\r\n\r\n")
        except OSError:
            with self._lock:
                self.closed[kind] += 1
            return None
        return _Conn(kind, sock)

    def open_count(self) -> dict[str, int]:
        """Open connections by kind (the kinds asked for)."""
        with self._lock:
            out = {kind: 0 for kind, n in self.counts.items() if n}
            for c in self.conns:
                out[c.kind] += 1
            return out

    # -- the loop ----------------------------------------------------------------------------------
    def start(self) -> SlowLoad:
        for kind, n in self.counts.items():
            for _ in range(n):
                conn = self._open(kind)
                if conn is not None:
                    self.conns.append(conn)
        self._thread = threading.Thread(target=self._run, name="slowload", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        next_byte = time.monotonic() + self.interval
        while not self._stop.is_set():
            socks = [c.sock for c in self.conns]
            timeout = max(0.0, min(0.2, next_byte - time.monotonic()))
            readable = select.select(socks, [], [], timeout)[0] if socks else []
            if not socks:
                time.sleep(timeout)
            gone = []
            for conn in self.conns:
                if conn.sock not in readable:
                    continue
                try:
                    data = conn.sock.recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data:
                    gone.append(conn)
                elif conn.kind == "idle" and data.startswith(b"HTTP/1."):
                    self.answered += 1
            if time.monotonic() >= next_byte:
                next_byte += self.interval
                for conn in self.conns:
                    if conn.kind != "idle" and conn not in gone:
                        try:
                            conn.sock.send(b"x" if conn.kind == "slowloris" else b" ")
                            self.bytes_sent += 1
                        except OSError:
                            gone.append(conn)
            for conn in gone:  # closed by the server: open it again
                conn.sock.close()
                with self._lock:
                    self.conns.remove(conn)
                    self.closed[conn.kind] += 1
                again = self._open(conn.kind)
                if again is not None:
                    with self._lock:
                        self.conns.append(again)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        for conn in self.conns:
            conn.sock.close()
        self.conns = []

    def __enter__(self) -> SlowLoad:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
