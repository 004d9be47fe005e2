"""A small keep-alive HTTP/1.1 client for the plain-HTTP calls to cart, user and the gateway.

Why not urllib3/requests here: on this path they cost ~0.3 ms of CPU per call (URL parsing,
header objects, email-parser header parsing, two sends per POST), three to four calls per
payment. This client keeps a LIFO stack of idle connections per host:port shared by the
worker's threads, sends each request in one `sendall`, parses the status line and the few
headers it needs, and supports Content-Length, chunked and read-to-close bodies.

Safety: an idle connection is checked before reuse (readable = closed by the server or junk:
discarded), so a request is only sent on a connection believed healthy; nothing is retried
after bytes were sent. Timeouts: connect, then read (per socket operation).
"""

from __future__ import annotations

import select
import socket
import threading
from io import BufferedReader

MAX_BODY = 4 * 1024 * 1024
MAX_LINE = 65536


class ConnectFailed(OSError):
    """The TCP connection could not be made: refused, unreachable or connect timeout."""

    def __init__(self, timed_out: bool, detail: str) -> None:
        super().__init__(detail)
        self.timed_out = timed_out


class ReadTimedOut(OSError):
    """Sent, but no (complete) answer within the read timeout."""


class BadResponse(OSError):
    """Connection closed or reset mid-exchange, or an unparseable answer."""


class _Conn:
    __slots__ = ("rfile", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.rfile: BufferedReader = sock.makefile("rb", buffering=65536)  # type: ignore[assignment]

    def close(self) -> None:
        try:
            self.rfile.close()
        finally:
            self.sock.close()

    def dropped(self) -> bool:
        """True when the peer closed (or sent something unexpected) while idle."""
        try:
            readable, _, _ = select.select([self.sock], [], [], 0)
        except (OSError, ValueError):
            return True
        return bool(readable)


class HostPool:
    """Idle keep-alive connections to one host:port."""

    def __init__(self, host: str, port: int, connect_timeout: float, maxsize: int) -> None:
        self.host = host
        self.port = port
        self.connect_timeout = connect_timeout
        self.maxsize = maxsize
        self.host_header = f"{host}:{port}".encode()
        self._idle: list[_Conn] = []
        self._lock = threading.Lock()

    def _connect(self) -> _Conn:
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.connect_timeout)
        except socket.timeout as exc:
            raise ConnectFailed(True, f"connect timeout: {exc}") from None
        except OSError as exc:
            raise ConnectFailed(False, f"{type(exc).__name__}: {exc}") from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return _Conn(sock)

    def _get(self) -> _Conn:
        while True:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            if conn is None:
                return self._connect()
            if conn.dropped():
                conn.close()
                continue
            return conn

    def _put(self, conn: _Conn) -> None:
        with self._lock:
            if len(self._idle) < self.maxsize:
                self._idle.append(conn)
                return
        conn.close()

    def request(
        self,
        method: str,
        path: str,
        headers: dict[str, str],
        body: bytes | None,
        read_timeout: float,
    ) -> tuple[int, bytes]:
        head = [f"{method} {path} HTTP/1.1\r\nHost: ".encode(), self.host_header]
        for name, value in headers.items():
            head.append(f"\r\n{name}: {value}".encode())
        if body is not None or method in ("POST", "PUT", "PATCH"):
            head.append(f"\r\nContent-Length: {len(body or b'')}".encode())
        head.append(b"\r\n\r\n")
        if body:
            head.append(body)
        raw = b"".join(head)
        conn = self._get()
        try:
            conn.sock.settimeout(read_timeout)
            conn.sock.sendall(raw)
            status, data, keep = _read_response(conn.rfile, method)
        except socket.timeout:
            conn.close()
            raise ReadTimedOut("read timeout") from None
        except (OSError, ValueError) as exc:
            conn.close()
            if isinstance(exc, BadResponse):
                raise
            raise BadResponse(f"{type(exc).__name__}: {exc}") from None
        if keep:
            self._put(conn)
        else:
            conn.close()
        return status, data

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


def _read_response(rfile: BufferedReader, method: str) -> tuple[int, bytes, bool]:
    while True:
        line = rfile.readline(MAX_LINE)
        if not line:
            raise BadResponse("connection closed before the answer")
        parts = line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/"):
            raise BadResponse("bad status line")
        status = int(parts[1])
        keep = parts[0] != b"HTTP/1.0"
        length = -1
        chunked = False
        while True:
            h = rfile.readline(MAX_LINE)
            if h in (b"\r\n", b"\n"):
                break
            if not h:
                raise BadResponse("connection closed in the headers")
            name, _, value = h.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif name == b"connection":
                v = value.strip().lower()
                keep = v != b"close" and (keep or v == b"keep-alive")
        if 100 <= status < 200:
            continue  # 100 Continue and friends: the real answer follows
        break
    if method == "HEAD" or status in (204, 304):
        return status, b"", keep
    if chunked:
        return status, _read_chunked(rfile), keep
    if length >= 0:
        if length > MAX_BODY:
            raise BadResponse("answer too large")
        data = rfile.read(length)
        if len(data) != length:
            raise BadResponse("connection closed in the body")
        return status, data, keep
    data = rfile.read(MAX_BODY + 1)  # no length: the body ends with the connection
    if len(data) > MAX_BODY:
        raise BadResponse("answer too large")
    return status, data, False


def _read_chunked(rfile: BufferedReader) -> bytes:
    out = []
    total = 0
    while True:
        line = rfile.readline(MAX_LINE)
        if not line:
            raise BadResponse("connection closed in a chunk")
        size = int(line.split(b";", 1)[0].strip(), 16)
        if size == 0:
            while rfile.readline(MAX_LINE) not in (b"\r\n", b"\n", b""):
                pass  # trailers
            return b"".join(out)
        total += size
        if total > MAX_BODY:
            raise BadResponse("answer too large")
        data = rfile.read(size)
        if len(data) != size:
            raise BadResponse("connection closed in a chunk")
        out.append(data)
        rfile.readline(MAX_LINE)
