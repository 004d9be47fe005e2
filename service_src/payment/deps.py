"""Outbound HTTP to Cart, User and the payment gateway: one connection pool per worker."""

from __future__ import annotations

import time

import urllib3
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    MaxRetryError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
)

from . import metrics
from .config import Settings

# Retry only what never reached the server (connection not established).
RETRY = urllib3.Retry(total=1, connect=1, read=0, redirect=0, status=0, other=0)


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
        self.pool = urllib3.PoolManager(
            num_pools=8,
            maxsize=max(pool_size, 2),
            block=False,
            retries=RETRY,
            timeout=urllib3.Timeout(connect=settings.connect_timeout, read=settings.read_timeout),
        )
        self.gateway_timeout = urllib3.Timeout(
            connect=settings.connect_timeout, read=settings.gateway_timeout
        )

    def call(
        self,
        dependency: str,
        operation: str,
        method: str,
        url: str,
        request_id: str,
        body: bytes | None = None,
        timeout: urllib3.Timeout | None = None,
    ) -> tuple[int, bytes]:
        headers = {"X-Request-ID": request_id}
        if body is not None:
            headers["Content-Type"] = "application/json"
        started = time.perf_counter()
        try:
            response = self.pool.request(
                method,
                url,
                body=body,
                headers=headers,
                timeout=timeout or urllib3.util.timeout._DEFAULT_TIMEOUT,
                redirect=False,
            )
            return response.status, response.data
        except MaxRetryError as exc:
            raise self._error(dependency, operation, exc.reason or exc) from None
        except HTTPError as exc:
            raise self._error(dependency, operation, exc) from None
        finally:
            metrics.DEP_LATENCY.labels(dependency, operation).observe(time.perf_counter() - started)

    @staticmethod
    def _error(dependency: str, operation: str, exc: BaseException) -> DependencyError:
        metrics.DEP_ERRORS.labels(dependency, operation).inc()
        if isinstance(exc, NewConnectionError):
            kind = "refused"
        elif isinstance(exc, ReadTimeoutError):
            kind = "read_timeout"
        elif isinstance(exc, ConnectTimeoutError):
            kind = "timeout"
        elif isinstance(exc, ProtocolError):
            kind = "protocol"
        else:
            kind = "error"
        return DependencyError(dependency, kind, type(exc).__name__)

    # -- the calls the payment flow makes ------------------------------------------------
    def user_registered(self, user_id: str, request_id: str) -> bool:
        status, _ = self.call(
            "user", "check", "GET", f"{self.settings.user_base}/check/{user_id}", request_id
        )
        if status == 200:
            return True
        if status == 404:
            return False
        raise DependencyError("user", "status", f"HTTP {status}", status)

    def charge(self, request_id: str) -> None:
        status, _ = self.call(
            "gateway",
            "charge",
            "GET",
            self.settings.gateway_url,
            request_id,
            timeout=self.gateway_timeout,
        )
        if status != 200:
            metrics.DEP_ERRORS.labels("gateway", "charge").inc()
            raise DependencyError("gateway", "status", f"HTTP {status}", status)

    def add_history(self, user_id: str, body: bytes, request_id: str) -> int:
        status, _ = self.call(
            "user", "order", "POST", f"{self.settings.user_base}/order/{user_id}", request_id, body
        )
        return status

    def delete_cart(self, user_id: str, request_id: str) -> int:
        status, _ = self.call(
            "cart", "delete", "DELETE", f"{self.settings.cart_base}/cart/{user_id}", request_id
        )
        return status

    def probe(self, dependency: str, base: str) -> bool:
        """Readiness probe: any HTTP answer below 500 from <base>/health counts as up."""
        try:
            response = self.pool.request(
                "GET",
                f"{base}/health",
                timeout=urllib3.Timeout(connect=self.settings.connect_timeout, read=2.0),
                retries=False,
                redirect=False,
            )
        except Exception:
            return False
        return response.status < 500
