"""Outbound HTTP to Cart, User and the payment gateway: keep-alive pools per worker.

Plain-HTTP dependencies (cart, user, an http:// gateway) go through `httpclient.HostPool`
(cheap per call); an https:// gateway goes through urllib3 (TLS, certificate checks).
"""

from __future__ import annotations

import time
import urllib.parse

import urllib3
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    MaxRetryError,
    NewConnectionError,
    ReadTimeoutError,
)

from . import metrics
from .config import Settings
from .httpclient import BadResponse, ConnectFailed, HostPool, ReadTimedOut


class DependencyError(Exception):
    """A call failed: kind is refused, timeout (connect), read_timeout, protocol or status."""

    def __init__(self, dependency: str, kind: str, detail: str, status: int = 0) -> None:
        super().__init__(f"{dependency}: {kind}: {detail}")
        self.dependency = dependency
        self.kind = kind
        self.status = status


class Deps:
    def __init__(self, settings: Settings, pool_size: int) -> None:
        self.settings = settings
        size = max(pool_size, 2)
        self.cart = HostPool(settings.cart_host, settings.cart_port, settings.connect_timeout, size)
        self.user = HostPool(settings.user_host, settings.user_port, settings.connect_timeout, size)
        url = urllib.parse.urlsplit(settings.gateway_url)
        self.gateway_path = (url.path or "/") + (f"?{url.query}" if url.query else "")
        self.gateway: HostPool | None = None
        self.tls: urllib3.PoolManager | None = None
        if url.scheme == "http":
            self.gateway = HostPool(
                url.hostname or "localhost", url.port or 80, settings.connect_timeout, size
            )
        else:
            self.tls = urllib3.PoolManager(
                num_pools=2,
                maxsize=size,
                block=False,
                retries=urllib3.Retry(total=1, connect=1, read=0, redirect=0, status=0, other=0),
            )

    def call(
        self,
        dependency: str,
        operation: str,
        pool: HostPool,
        method: str,
        path: str,
        request_id: str,
        body: bytes | None = None,
        read_timeout: float | None = None,
    ) -> tuple[int, bytes]:
        headers = {"X-Request-ID": request_id}
        if body is not None:
            headers["Content-Type"] = "application/json"
        started = time.perf_counter()
        try:
            return pool.request(
                method, path, headers, body, read_timeout or self.settings.read_timeout
            )
        except ConnectFailed as exc:
            kind = "timeout" if exc.timed_out else "refused"
            raise self._error(dependency, operation, kind, exc) from None
        except ReadTimedOut as exc:
            raise self._error(dependency, operation, "read_timeout", exc) from None
        except (BadResponse, OSError) as exc:
            raise self._error(dependency, operation, "protocol", exc) from None
        finally:
            metrics.DEP_LATENCY.labels(dependency, operation).observe(time.perf_counter() - started)

    @staticmethod
    def _error(dependency: str, operation: str, kind: str, exc: BaseException) -> DependencyError:
        metrics.DEP_ERRORS.labels(dependency, operation).inc()
        return DependencyError(dependency, kind, type(exc).__name__)

    # -- the calls the payment flow makes ------------------------------------------------
    def user_registered(self, user_id: str, request_id: str) -> bool:
        status, _ = self.call("user", "check", self.user, "GET", f"/check/{user_id}", request_id)
        if status == 200:
            return True
        if status == 404:
            return False
        raise DependencyError("user", "status", f"HTTP {status}", status)

    def charge(self, request_id: str) -> None:
        if self.gateway is not None:
            status, _ = self.call(
                "gateway",
                "charge",
                self.gateway,
                "GET",
                self.gateway_path,
                request_id,
                read_timeout=self.settings.gateway_timeout,
            )
        else:
            status = self._charge_tls(request_id)
        if status != 200:
            metrics.DEP_ERRORS.labels("gateway", "charge").inc()
            raise DependencyError("gateway", "status", f"HTTP {status}", status)

    def _charge_tls(self, request_id: str) -> int:
        assert self.tls is not None
        started = time.perf_counter()
        try:
            response = self.tls.request(
                "GET",
                self.settings.gateway_url,
                headers={"X-Request-ID": request_id},
                timeout=urllib3.Timeout(
                    connect=self.settings.connect_timeout, read=self.settings.gateway_timeout
                ),
                redirect=False,
            )
            return response.status
        except MaxRetryError as exc:
            raise self._tls_error(exc.reason or exc) from None
        except HTTPError as exc:
            raise self._tls_error(exc) from None
        finally:
            metrics.DEP_LATENCY.labels("gateway", "charge").observe(time.perf_counter() - started)

    def _tls_error(self, exc: BaseException) -> DependencyError:
        if isinstance(exc, NewConnectionError):
            kind = "refused"
        elif isinstance(exc, ReadTimeoutError):
            kind = "read_timeout"
        elif isinstance(exc, ConnectTimeoutError):
            kind = "timeout"
        else:
            kind = "protocol"
        return self._error("gateway", "charge", kind, exc)

    def add_history(self, user_id: str, body: bytes, request_id: str) -> int:
        status, _ = self.call(
            "user", "order", self.user, "POST", f"/order/{user_id}", request_id, body
        )
        return status

    def delete_cart(self, user_id: str, request_id: str) -> int:
        status, _ = self.call("cart", "delete", self.cart, "DELETE", f"/cart/{user_id}", request_id)
        return status

    def probe(self, dependency: str) -> bool:
        """Readiness probe: any HTTP answer below 500 from /health counts as up."""
        pool = self.cart if dependency == "cart" else self.user
        try:
            status, _ = pool.request("GET", "/health", {}, None, 2.0)
        except OSError:
            return False
        return status < 500
