"""The payment flow and the per-worker resources it uses (pool, publisher, outbox, store)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from . import metrics
from .amqp import ABANDONED, CONFIRMED, UNCERTAIN, Publisher, Ticket
from .config import Settings
from .deps import DependencyError, Deps
from .idempotency import IN_FLIGHT, MISMATCH, REPLAY, RedisStore, SQLiteStore, Store
from .ledger import Ledger
from .outbox import Drainer, Outbox, Row
from .validation import units

log = logging.getLogger("payment")

LATE_CONFIRM_WINDOW = 30.0  # seconds an abandoned-but-sent publish may still be confirmed
OUTBOX_LEASE = 60.0


@dataclass
class Result:
    status: int
    body: dict[str, Any]
    final: bool = True  # after a charge: keep it for the Idempotency-Key (never charge twice)
    log: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)


def error(status: int, message: str, final: bool = False, **extra: Any) -> Result:
    body = {"status": "error", "message": message, **extra}
    return Result(status, body, final, {"error": message})


def fingerprint(user_id: str, cart: Any) -> str:
    canonical = json.dumps([user_id, cart], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


class Service:
    def __init__(self, settings: Settings, threads: int = 1) -> None:
        self.settings = settings
        self.threads = threads
        self.started = time.time()
        self.deps = Deps(settings, pool_size=threads + 2)
        self.outbox = Outbox(settings.state_dir)
        self.idempotency: Store = (
            RedisStore(settings.redis_url, settings.idempotency_ttl, settings.idempotency_lease)
            if settings.idempotency_backend == "redis"
            else SQLiteStore(
                settings.state_dir, settings.idempotency_ttl, settings.idempotency_lease
            )
        )
        self._pid = 0
        self._start_lock = threading.Lock()
        self._health_lock = threading.Lock()
        self._health: tuple[float, int, dict[str, Any]] = (0.0, 503, {})
        self.publisher: Publisher
        self.drainer: Drainer

    # -- per-process resources (created after fork) -------------------------------------
    def ensure_started(self) -> None:
        if self._pid == os.getpid():
            return
        with self._start_lock:
            if self._pid == os.getpid():
                return
            self.publisher = Publisher(
                self.settings, on_ready=self._on_broker_ready, on_late_confirm=self._late_confirm
            )
            self.drainer = Drainer(
                self.outbox,
                submit=self._submit_row,
                connected=lambda: self.publisher.connected,
                poll=self.settings.outbox_poll,
                lease=OUTBOX_LEASE,
                confirm_timeout=self.settings.publish_timeout,
                late_window=LATE_CONFIRM_WINDOW,
                on_delivered=lambda _row: metrics.OUTBOX.labels("delivered").inc(),
                ledger=self._ledger_seen if self.settings.amqp_ledger_queue else None,
                on_duplicate=lambda _row: metrics.OUTBOX.labels("already_delivered").inc(),
            )
            self.publisher.start()
            self.drainer.start()
            self._pid = os.getpid()

    def _on_broker_ready(self) -> None:
        drainer = getattr(self, "drainer", None)
        if drainer is not None:
            drainer.wake()

    def _ledger_seen(self, since: float, wanted: set[str]) -> set[str]:
        if not self.publisher.ledger_enabled:
            return set()  # no ledger on this broker: republish (at-least-once)
        return Ledger(self.settings).seen(since, wanted)

    def _late_confirm(self, orderid: str) -> None:
        self.outbox.delete(orderid)

    def _submit_row(self, row: Row) -> Ticket:
        return self.publisher.publish(row.orderid, row.body, {"x-request-id": row.request_id})

    # -- POST /pay/<id> ------------------------------------------------------------------
    def pay(self, user_id: str, cart: dict[str, Any], key: str | None, rid: str) -> Result:
        if key is None:
            return self._pay(user_id, cart, rid)
        try:
            outcome = self.idempotency.begin(key, fingerprint(user_id, cart))
        except Exception as exc:
            log.warning("idempotency store unavailable: %s", type(exc).__name__)
            return error(503, "idempotency store unavailable", dependency="idempotency")
        if outcome.kind == REPLAY:
            result = Result(outcome.status, json.loads(outcome.body), True, {"replay": True})
            result.headers["Idempotent-Replayed"] = "true"
            return result
        if outcome.kind == MISMATCH:
            return error(422, "Idempotency-Key already used with another request")
        if outcome.kind == IN_FLIGHT:
            return error(409, "a request with this Idempotency-Key is in progress")
        try:
            result = self._pay(user_id, cart, rid)
        except BaseException:
            self._safe(self.idempotency.abort, key)
            raise
        if result.final:
            self._safe(self.idempotency.finish, key, result.status, json.dumps(result.body))
        else:
            self._safe(self.idempotency.abort, key)
        return result

    @staticmethod
    def _safe(fn: Any, *args: Any) -> None:
        try:
            fn(*args)
        except Exception as exc:
            log.error("idempotency store update failed: %s", type(exc).__name__)

    def _pay(self, user_id: str, cart: dict[str, Any], rid: str) -> Result:
        # 1. registered or anonymous: nothing is charged unless this answers
        try:
            registered = self.deps.user_registered(user_id, rid)
        except DependencyError as exc:
            return error(503, "user service unavailable", dependency="user", reason=exc.kind)
        # 2. charge
        if self.settings.delay_ms:
            time.sleep(self.settings.delay_ms / 1000.0)
        try:
            self.deps.charge(rid)
        except DependencyError as exc:
            if exc.kind == "status":
                return error(502, "payment declined by the gateway", dependency="gateway")
            if exc.kind in ("read_timeout", "protocol"):
                # the gateway may have charged: final, a retry with the key must not charge
                return error(
                    504,
                    "payment gateway did not answer; the charge state is unknown",
                    final=True,
                    dependency="gateway",
                )
            return error(503, "payment gateway unavailable", dependency="gateway", reason=exc.kind)
        # 3. the order: confirmed by the broker, or durable in the local outbox
        orderid = str(uuid.uuid4())
        message = json.dumps(
            {"orderid": orderid, "user": user_id, "cart": cart}, separators=(",", ":")
        ).encode()
        ticket = self.publisher.publish(orderid, message, {"x-request-id": rid})
        where = ""
        if ticket.done:  # not connected: into the outbox before anything else
            where = self._settle(ticket, orderid, message, rid)
        # 4./5. while the broker confirms: order history and cart delete. After the charge
        # nothing fails the payment: failures are logged and counted.
        body = json.dumps({"orderid": orderid, "cart": cart}, separators=(",", ":")).encode()
        if registered:
            self._after_charge("user", "history", self.deps.add_history, user_id, body, rid)
        self._after_charge("cart", "delete", self.deps.delete_cart, user_id, rid)
        if not where:
            where = self._settle(ticket, orderid, message, rid)
        if where == "lost":
            return error(503, "the order could not be recorded", final=True, dependency="rabbitmq")
        result = Result(200, {"orderid": orderid}, True, {"orderid": orderid, "order": where})
        n = units(cart)
        metrics.SOLD.inc(n)
        metrics.UNITS.observe(n)
        metrics.CART_VALUE.observe(cart["total"])
        return result

    def _after_charge(self, dependency: str, operation: str, fn: Any, *args: Any) -> None:
        try:
            status = fn(*args)
        except DependencyError as exc:
            metrics.DEP_ERRORS.labels(dependency, operation).inc()
            log.warning("%s %s failed after the charge: %s", dependency, operation, exc.kind)
            return
        if status != 200:
            if status != 404:  # 404 = no cart / unknown user: nothing to undo
                metrics.DEP_ERRORS.labels(dependency, operation).inc()
            log.warning("%s %s answered %s after the charge", dependency, operation, status)

    def _settle(self, ticket: Ticket, orderid: str, message: bytes, rid: str) -> str:
        """Wait for the confirm, else keep the order in the outbox: broker, outbox or lost."""
        state = ticket.wait(self.settings.publish_timeout)
        if state == CONFIRMED:
            return "broker"
        late = state == ABANDONED and ticket.sent
        try:
            self.outbox.add(
                orderid,
                message,
                rid,
                delay=LATE_CONFIRM_WINDOW if late else 0.0,
                uncertain=late or state == UNCERTAIN,
            )
        except Exception as exc:
            log.error("order %s not recorded: %s", orderid, type(exc).__name__)
            return "lost"
        metrics.OUTBOX.labels("stored").inc()
        if self.publisher.pop_late_confirm(orderid):
            self.outbox.delete(orderid)
        else:
            self.drainer.wake()
        return "outbox"

    # -- GET /health ---------------------------------------------------------------------
    def health(self) -> tuple[int, dict[str, Any]]:
        now = time.monotonic()
        with self._health_lock:
            at, status, body = self._health
            if body and now - at < self.settings.health_cache:
                return status, body
        s = self.settings
        cart = self.deps.probe("cart")
        user = self.deps.probe("user")
        broker = self.publisher.connected
        try:
            pending: int | None = self.outbox.pending()
        except Exception:
            pending = None
        outbox_ok = pending is not None and pending < s.outbox_max and self.outbox.writable()
        ready = user and (broker or (outbox_ok and not s.health_require_broker))

        def word(up: bool) -> str:
            return "connected" if up else "disconnected"

        body = {
            "status": "ok" if ready else "unavailable",
            "cart": word(cart),
            "user": word(user),
            "rabbitmq": word(broker),
            "outbox": {"pending": pending, "writable": outbox_ok},
            "idempotency": {
                "backend": s.idempotency_backend,
                "state": word(self.idempotency.ping()),
            },
        }
        if not broker and self.publisher.last_error:
            body["rabbitmq_error"] = self.publisher.last_error[:200]
        status = 200 if ready else 503
        with self._health_lock:
            self._health = (time.monotonic(), status, body)
        return status, body
