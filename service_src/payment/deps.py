"""Outbound HTTP to Cart, User and the payment gateway, on the standard library's http.client.

urllib3 cost 0.16 ms of CPU per keep-alive call and 0.30 ms per fresh connection on the
benchmark's machine, http.client 0.08 / 0.17 ms (README, "measured"): the pool, Retry and
response machinery around the same http.client parser. So this module keeps only what the
payment flow needs around http.client (no HTTP parsing of its own):

Cart and User: one keep-alive connection per thread and host (uWSGI threads; a connection is
never shared). An idle connection is checked before reuse (the peer closed it: dropped). A
failed connect is retried once; an idempotent call (GET, DELETE) is retried once on a fresh
connection after a stale-connection or read error; the history POST never is.

The user check is split in two (`start_user_check`): the request is sent, the caller does its
own work (the payment record's fsync) while the user service answers, then reads the answer.

The charge: a fresh connection for every charge, closed after it, never a cached one, so a
charge is never sent on a connection the gateway may have closed meanwhile. Anything that
fails before the connection is up (refused, connect timeout, TLS) means no byte of the charge
left: `refused`/`timeout`, nothing charged. Anything after the request went out (read
timeout, reset, malformed answer) is `read_timeout`/`protocol`: the charge state is unknown,
and it is never retried.
"""

from __future__ import annotations

import http.client
import select
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable

from . import metrics
from .config import Settings

IDEMPOTENT = frozenset({"GET", "DELETE"})


class DependencyError(Exception):
    """A call failed: kind is refused, timeout (connect), read_timeout, protocol or status."""

    def __init__(self, dependency: str, kind: str, detail: str, status: int = 0) -> None:
        super().__init__(f"{dependency}: {kind}: {detail}")
        self.dependency = dependency
        self.kind = kind
        self.status = status


class _ConnectFailed(Exception):
    def __init__(self, kind: str, exc: BaseException) -> None:
        super().__init__(kind)
        self.kind = kind
        self.exc = exc


def _connect_kind(exc: BaseException) -> str:
    return "timeout" if isinstance(exc, TimeoutError) else "refused"


def _read_kind(exc: BaseException) -> str:
    return "read_timeout" if isinstance(exc, TimeoutError) else "protocol"


def _open(
    host: str, port: int, connect_timeout: float, read_timeout: float, tls: bool = False
) -> http.client.HTTPConnection:
    """A connected http.client connection; _ConnectFailed when nothing could be sent."""
    conn: http.client.HTTPConnection
    if tls:
        conn = http.client.HTTPSConnection(
            host, port, timeout=connect_timeout, context=ssl.create_default_context()
        )
    else:
        conn = http.client.HTTPConnection(host, port, timeout=connect_timeout)
    try:
        conn.connect()  # TCP (and TLS, certificate checked): no request byte sent yet
    except (OSError, UnicodeError) as exc:  # UnicodeError: a name the idna codec refuses
        conn.close()
        raise _ConnectFailed(_connect_kind(exc), exc) from None
    sock = conn.sock
    assert sock is not None
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.settimeout(read_timeout)
    return conn


def _dropped(conn: http.client.HTTPConnection) -> bool:
    """An idle keep-alive connection the peer closed (or sent something on) is not reused:
    readable while idle means EOF, a reset or stray bytes."""
    sock = conn.sock
    if sock is None:
        return True
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))


class Host:
    """Keep-alive calls to one host: one http.client connection per thread."""

    def __init__(self, name: str, host: str, port: int, connect: float, read: float) -> None:
        self.name = name
        self.host = host
        self.port = port
        self.connect_timeout = connect
        self.read_timeout = read
        self._local = threading.local()

    def _take(self) -> tuple[http.client.HTTPConnection, bool]:
        """This thread's connection (reused: True) or a new one (retried once on failure)."""
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            if not _dropped(conn):
                return conn, True
            conn.close()
        try:
            return _open(self.host, self.port, self.connect_timeout, self.read_timeout), False
        except _ConnectFailed:
            return _open(self.host, self.port, self.connect_timeout, self.read_timeout), False

    def _give_back(self, conn: http.client.HTTPConnection, response: http.client.HTTPResponse):
        if response.will_close:
            conn.close()
        else:
            self._local.conn = conn

    def send(
        self, method: str, path: str, headers: dict[str, str], body: bytes | None
    ) -> Callable[[], int]:
        """Send the request now; the returned function reads the answer (its status). A
        stale-connection or read error is retried once on a fresh connection for GET/DELETE."""
        retried = False
        while True:
            conn, reused = self._take()  # _ConnectFailed: nothing sent
            try:
                conn.request(method, path, body=body, headers=headers)
                break
            except OSError:  # a reused connection the peer closed meanwhile: nothing answered
                conn.close()
                if not reused or retried or method not in IDEMPOTENT:
                    raise
                retried = True

        def answer() -> int:
            try:
                response = conn.getresponse()
                response.read()
            except (OSError, http.client.HTTPException):
                conn.close()
                if retried or method not in IDEMPOTENT:
                    raise
                return self.send_once(method, path, headers, body)
            self._give_back(conn, response)
            return response.status

        return answer

    def send_once(self, method: str, path: str, headers: dict[str, str], body: bytes | None) -> int:
        """One attempt on a fresh connection (the retry of an idempotent call)."""
        conn = _open(self.host, self.port, self.connect_timeout, self.read_timeout)
        try:
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            response.read()
        except BaseException:
            conn.close()
            raise
        self._give_back(conn, response)
        return response.status


class Deps:
    def __init__(self, settings: Settings, pool_size: int = 0) -> None:
        self.settings = settings
        s = settings
        self.cart = Host("cart", s.cart_host, s.cart_port, s.connect_timeout, s.read_timeout)
        self.user = Host("user", s.user_host, s.user_port, s.connect_timeout, s.read_timeout)
        url = urllib.parse.urlsplit(settings.gateway_url)
        self.gateway_tls = url.scheme == "https"
        self.gateway_host = url.hostname or "localhost"
        self.gateway_port = url.port or (443 if self.gateway_tls else 80)
        self.gateway_path = (url.path or "/") + (f"?{url.query}" if url.query else "")
        self._latency: dict[tuple[str, str], object] = {}

    def _observe(self, dependency: str, operation: str, seconds: float) -> None:
        """The call's latency; never raises (a metric must not change a call's outcome: a
        charge the gateway took would otherwise look unknown)."""

        def observe() -> None:
            child = self._latency.get((dependency, operation))
            if child is None:
                child = self._latency[(dependency, operation)] = metrics.DEP_LATENCY.labels(
                    dependency, operation
                )
            child.observe(seconds)  # type: ignore[attr-defined]

        metrics.safe(observe, "metrics")

    @staticmethod
    def _error(dependency: str, operation: str, kind: str, exc: BaseException) -> DependencyError:
        metrics.inc(metrics.DEP_ERRORS, dependency, operation)
        return DependencyError(dependency, kind, type(exc).__name__)

    def start(
        self,
        host: Host,
        operation: str,
        method: str,
        path: str,
        request_id: str,
        body: bytes | None = None,
    ) -> Callable[[], int]:
        """Send a call now; the returned function waits for its status (DependencyError)."""
        headers = {"X-Request-ID": request_id}
        if body is not None:
            headers["Content-Type"] = "application/json"
        started = time.perf_counter()
        try:
            answer = host.send(method, path, headers, body)
        except _ConnectFailed as exc:
            self._observe(host.name, operation, time.perf_counter() - started)
            raise self._error(host.name, operation, exc.kind, exc.exc) from None
        except (OSError, http.client.HTTPException) as exc:
            self._observe(host.name, operation, time.perf_counter() - started)
            raise self._error(host.name, operation, _read_kind(exc), exc) from None

        def finish() -> int:
            try:
                return answer()
            except _ConnectFailed as exc:
                raise self._error(host.name, operation, exc.kind, exc.exc) from None
            except (OSError, http.client.HTTPException) as exc:
                raise self._error(host.name, operation, _read_kind(exc), exc) from None
            finally:
                self._observe(host.name, operation, time.perf_counter() - started)

        return finish

    def call(
        self,
        host: Host,
        operation: str,
        method: str,
        path: str,
        request_id: str,
        body: bytes | None = None,
    ) -> int:
        return self.start(host, operation, method, path, request_id, body)()

    # -- the calls the payment flow makes ------------------------------------------------
    def start_user_check(self, user_id: str, request_id: str) -> Callable[[], bool]:
        """Send `GET USER/check/<id>`; the returned function waits for it: True registered,
        False anonymous, DependencyError otherwise. (Both parts may raise.)"""
        try:
            finish = self.start(self.user, "check", "GET", f"/check/{user_id}", request_id)
        except DependencyError as exc:
            error = exc

            def failed() -> bool:
                raise error

            return failed

        def registered() -> bool:
            status = finish()
            if status == 200:
                return True
            if status == 404:
                return False
            raise DependencyError("user", "status", f"HTTP {status}", status)

        return registered

    def user_registered(self, user_id: str, request_id: str) -> bool:
        return self.start_user_check(user_id, request_id)()

    def charge(self, request_id: str) -> None:
        """GET the gateway on a fresh connection; DependencyError unless it answers 200."""
        started = time.perf_counter()
        try:
            status = self._charge(request_id)
        finally:
            self._observe("gateway", "charge", time.perf_counter() - started)
        if status != 200:
            metrics.inc(metrics.DEP_ERRORS, "gateway", "charge")
            raise DependencyError("gateway", "status", f"HTTP {status}", status)

    def _charge(self, request_id: str) -> int:
        s = self.settings
        try:  # nothing has been sent until this succeeds
            conn = _open(
                self.gateway_host,
                self.gateway_port,
                s.connect_timeout,
                s.gateway_timeout,
                self.gateway_tls,
            )
        except _ConnectFailed as exc:
            raise self._error("gateway", "charge", exc.kind, exc.exc) from None
        try:  # from here on the gateway may have charged: never retried
            conn.request(
                "GET",
                self.gateway_path,
                headers={"X-Request-ID": request_id, "Connection": "close"},
            )
            response = conn.getresponse()
            response.read()
            return response.status
        except TimeoutError as exc:
            raise self._error("gateway", "charge", "read_timeout", exc) from None
        except (OSError, http.client.HTTPException) as exc:
            raise self._error("gateway", "charge", "protocol", exc) from None
        finally:
            conn.close()

    def start_history(self, user_id: str, body: bytes, request_id: str) -> Callable[[], int]:
        """Send `POST USER/order/<id>`; the returned function waits for its status."""
        return self.start(self.user, "order", "POST", f"/order/{user_id}", request_id, body)

    def add_history(self, user_id: str, body: bytes, request_id: str) -> int:
        return self.start_history(user_id, body, request_id)()

    def start_delete_cart(self, user_id: str, request_id: str) -> Callable[[], int]:
        """Send `DELETE CART/cart/<id>`; the returned function waits for its status."""
        return self.start(self.cart, "delete", "DELETE", f"/cart/{user_id}", request_id)

    def delete_cart(self, user_id: str, request_id: str) -> int:
        return self.start_delete_cart(user_id, request_id)()

    def probe(self, dependency: str) -> bool:
        """Readiness probe (fresh connection, 1 s connect / 2 s read): any HTTP answer below
        500 from /health counts as up."""
        host = self.cart if dependency == "cart" else self.user
        try:
            conn = _open(host.host, host.port, 1.0, 2.0)
        except _ConnectFailed:
            return False
        try:
            conn.request("GET", "/health", headers={"Connection": "close"})
            response = conn.getresponse()
            response.read()
            return response.status < 500
        except (OSError, http.client.HTTPException):
            return False
        finally:
            conn.close()
