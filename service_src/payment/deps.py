"""Outbound HTTP to Cart, User and the payment gateway, through urllib3.

Cart and User: one keep-alive `HTTPConnectionPool` each per worker (an idle connection is
checked before reuse). A failed connect is retried once; an idempotent call (GET, DELETE) is
retried once after a stale-connection or read error; the history POST never is.

The charge: a fresh connection for every charge, closed after it, never a pooled one, so a
charge is never sent on a connection the gateway may have closed meanwhile. Anything that
fails before the connection is up (refused, connect timeout, TLS) means no byte of the charge
left: `refused`/`timeout`, nothing charged. Anything after the request went out (read
timeout, reset, malformed answer) is `read_timeout`/`protocol`: the charge state is unknown.
"""

from __future__ import annotations

import http.client
import socket
import time
import urllib.parse

import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    MaxRetryError,
    NewConnectionError,
    ReadTimeoutError,
)

from . import metrics
from .config import Settings


class DependencyError(Exception):
    """A call failed: kind is refused, timeout (connect), read_timeout, protocol or status."""

    def __init__(self, dependency: str, kind: str, detail: str, status: int = 0) -> None:
        super().__init__(f"{dependency}: {kind}: {detail}")
        self.dependency = dependency
        self.kind = kind
        self.status = status


def _kind(exc: BaseException) -> str:
    if isinstance(exc, MaxRetryError) and exc.reason is not None:
        exc = exc.reason
    if isinstance(exc, NewConnectionError):  # a subclass of ConnectTimeoutError
        return "refused"
    if isinstance(exc, ConnectTimeoutError):
        return "timeout"
    if isinstance(exc, ReadTimeoutError):
        return "read_timeout"
    return "protocol"


class Deps:
    def __init__(self, settings: Settings, pool_size: int) -> None:
        self.settings = settings
        size = max(pool_size, 2)
        timeout = urllib3.Timeout(connect=settings.connect_timeout, read=settings.read_timeout)
        retries = urllib3.Retry(
            total=1,
            connect=1,
            read=1,
            status=0,
            other=0,
            redirect=0,
            allowed_methods=frozenset({"GET", "DELETE"}),
            raise_on_status=False,
        )
        self.cart = urllib3.HTTPConnectionPool(
            settings.cart_host, settings.cart_port, maxsize=size, timeout=timeout, retries=retries
        )
        self.user = urllib3.HTTPConnectionPool(
            settings.user_host, settings.user_port, maxsize=size, timeout=timeout, retries=retries
        )
        url = urllib.parse.urlsplit(settings.gateway_url)
        self.gateway_tls = url.scheme == "https"
        self.gateway_host = url.hostname or "localhost"
        self.gateway_port = url.port or (443 if self.gateway_tls else 80)
        self.gateway_path = (url.path or "/") + (f"?{url.query}" if url.query else "")

    def call(
        self,
        dependency: str,
        operation: str,
        pool: urllib3.HTTPConnectionPool,
        method: str,
        path: str,
        request_id: str,
        body: bytes | None = None,
    ) -> int:
        headers = {"X-Request-ID": request_id}
        if body is not None:
            headers["Content-Type"] = "application/json"
        started = time.perf_counter()
        try:
            response = pool.request(method, path, body=body, headers=headers, redirect=False)
            return response.status
        except (HTTPError, OSError) as exc:
            raise self._error(dependency, operation, _kind(exc), exc) from None
        finally:
            metrics.DEP_LATENCY.labels(dependency, operation).observe(time.perf_counter() - started)

    @staticmethod
    def _error(dependency: str, operation: str, kind: str, exc: BaseException) -> DependencyError:
        metrics.DEP_ERRORS.labels(dependency, operation).inc()
        return DependencyError(dependency, kind, type(exc).__name__)

    # -- the calls the payment flow makes ------------------------------------------------
    def user_registered(self, user_id: str, request_id: str) -> bool:
        status = self.call("user", "check", self.user, "GET", f"/check/{user_id}", request_id)
        if status == 200:
            return True
        if status == 404:
            return False
        raise DependencyError("user", "status", f"HTTP {status}", status)

    def charge(self, request_id: str) -> None:
        """GET the gateway on a fresh connection; DependencyError unless it answers 200."""
        started = time.perf_counter()
        try:
            status = self._charge(request_id)
        finally:
            metrics.DEP_LATENCY.labels("gateway", "charge").observe(time.perf_counter() - started)
        if status != 200:
            metrics.DEP_ERRORS.labels("gateway", "charge").inc()
            raise DependencyError("gateway", "status", f"HTTP {status}", status)

    def _charge(self, request_id: str) -> int:
        s = self.settings
        cls = HTTPSConnection if self.gateway_tls else HTTPConnection
        conn = cls(self.gateway_host, self.gateway_port, timeout=s.connect_timeout)
        try:
            try:  # nothing has been sent until this succeeds
                conn.connect()
            except (HTTPError, OSError) as exc:
                kind = "refused" if isinstance(exc, NewConnectionError) else "timeout"
                if not isinstance(exc, (ConnectTimeoutError, TimeoutError)):
                    kind = "refused"  # TLS or other failure before any request byte
                raise self._error("gateway", "charge", kind, exc) from None
            try:  # from here on the gateway may have charged
                assert conn.sock is not None
                conn.sock.settimeout(s.gateway_timeout)
                conn.request(
                    "GET",
                    self.gateway_path,
                    headers={"X-Request-ID": request_id, "Connection": "close"},
                )
                response = conn.getresponse()
                response.read()
                return response.status
            except (TimeoutError, socket.timeout, ReadTimeoutError) as exc:
                raise self._error("gateway", "charge", "read_timeout", exc) from None
            except (HTTPError, OSError, http.client.HTTPException) as exc:
                raise self._error("gateway", "charge", "protocol", exc) from None
        finally:
            conn.close()

    def add_history(self, user_id: str, body: bytes, request_id: str) -> int:
        return self.call("user", "order", self.user, "POST", f"/order/{user_id}", request_id, body)

    def delete_cart(self, user_id: str, request_id: str) -> int:
        return self.call("cart", "delete", self.cart, "DELETE", f"/cart/{user_id}", request_id)

    def probe(self, dependency: str) -> bool:
        """Readiness probe: any HTTP answer below 500 from /health counts as up."""
        pool = self.cart if dependency == "cart" else self.user
        try:
            response = pool.request(
                "GET", "/health", retries=False, timeout=urllib3.Timeout(connect=1.0, read=2.0)
            )
        except (HTTPError, OSError):
            return False
        return response.status < 500
