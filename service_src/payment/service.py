"""The payment flow: a small state machine around a durable record (payment/records.py).

Before the charge: the request is checked, the user looked up, the order message built and
serialized (strict JSON), and the record written `pending` (fsync). Nothing after the gateway
call answers 500 or releases the Idempotency-Key: every error there is caught and counted,
and the answer comes from what is on disk.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import metrics
from .amqp import ABANDONED, CONFIRMED, FAILED, Publisher, Ticket
from .config import Settings
from .deps import DependencyError, Deps
from .drainer import Drainer
from .idempotency import CHARGING, IN_FLIGHT, MISMATCH, REPLAY, Outcome, SQLiteStore, Store
from .records import CHARGED, DECLINED, DELIVERED, PENDING, UNKNOWN, Record, Records
from .records import FAILED as NOT_REACHED
from .redisstore import RedisStore
from .validation import canonical, units

if TYPE_CHECKING:
    from flask import Flask

log = logging.getLogger("payment")

LATE_CONFIRM_WINDOW = 30.0  # seconds an abandoned-but-sent publish may still be confirmed
DRAIN_LEASE = 60.0
RETRY_AFTER = "1"


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
    """sha256 of canonical JSON: sorted keys, equal numbers equal (10 == 10.0)."""
    canon = json.dumps([user_id, canonical(cart)], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canon.encode()).hexdigest()


def unknown_result(**log_extra: Any) -> Result:
    result = error(
        504,
        "payment gateway did not answer; the charge state is unknown",
        final=True,
        dependency="gateway",
    )
    result.log.update(log_extra)
    return result


@dataclass
class Attempt:
    user: str
    cart: dict[str, Any]
    key: str | None
    fingerprint: str
    rid: str
    charging: bool = False  # the gateway call has started: the key is never released
    token: str = ""  # the Idempotency-Key claim this request owns


PublisherFactory = Callable[..., Publisher]


class Service:
    def __init__(
        self,
        settings: Settings,
        threads: int = 1,
        deps: Deps | None = None,
        publisher_factory: PublisherFactory | None = None,
        start_threads: bool = True,
    ) -> None:
        if publisher_factory is None:  # the real broker: no password, no service (ConfigError)
            settings.check_amqp_credentials()
        self.settings = settings
        self.threads = threads
        self.started = time.time()
        self.deps = deps if deps is not None else Deps(settings, pool_size=threads + 2)
        self.records = Records(settings.state_dir)
        self.idempotency: Store = (
            RedisStore(settings.redis_url, settings.idempotency_ttl, settings.claim_lease)
            if settings.idempotency_backend == "redis"
            else SQLiteStore(settings.state_dir, settings.idempotency_ttl, settings.claim_lease)
        )
        self._publisher_factory: PublisherFactory = publisher_factory or Publisher
        self._start_threads = start_threads
        self._pid = 0
        self._start_lock = threading.Lock()
        self._health_lock = threading.Lock()
        self._health: tuple[float, int, dict[str, Any]] = (0.0, 503, {})
        self.publisher: Publisher
        self.drainer: Drainer

    # -- the app and the per-process resources (created after fork) --------------------
    def init_app(self, app: Flask) -> None:
        """Register with a Flask app (`app.extensions["payment"]`). Starts nothing: the
        process that serves calls `ensure_started` (payment.wsgi, in each uWSGI worker)."""
        app.extensions["payment"] = self

    def ensure_started(self) -> None:
        """Start this process's resources, once per process: the AMQP publisher (its
        connection and I/O thread) and the drainer (its thread), both threads only with
        start_threads. Call it in the process that serves; like the Service itself (its
        SQLite connections, its pid as the records' owner), after fork."""
        if self._pid == os.getpid():
            return
        with self._start_lock:
            if self._pid == os.getpid():
                return
            self.publisher = self._publisher_factory(
                self.settings, on_ready=self._on_broker_ready, on_late_confirm=self._late_confirm
            )
            self.drainer = Drainer(
                self.records,
                submit=self._submit_record,
                connected=lambda: self.publisher.connected,
                poll=self.settings.outbox_poll,
                lease=DRAIN_LEASE,
                confirm_timeout=self.settings.publish_timeout,
                late_window=LATE_CONFIRM_WINDOW,
                pending_age=self.settings.pending_age,
                retention=float(self.settings.idempotency_ttl),
                on_delivered=lambda _r: metrics.inc(metrics.OUTBOX, "delivered"),
                on_unknown=lambda _o: metrics.inc(metrics.UNKNOWN, "worker_ended"),
            )
            if self._start_threads:
                self.publisher.start()
                self.drainer.start()
            self._pid = os.getpid()

    def _on_broker_ready(self) -> None:
        drainer = getattr(self, "drainer", None)
        if drainer is not None:
            drainer.wake()

    def _late_confirm(self, orderid: str) -> None:
        self.records.delivered(orderid)

    def _submit_record(self, record: Record) -> Ticket:
        return self.publisher.publish(
            record.orderid, record.body, {"x-request-id": record.request_id}
        )

    # -- POST /pay/<id> ------------------------------------------------------------------
    def pay(self, user_id: str, cart: dict[str, Any], key: str | None, rid: str) -> Result:
        # the fingerprint only matters for a key (a keyless record is never matched by it)
        fp = fingerprint(user_id, cart) if key is not None else ""
        attempt = Attempt(user_id, cart, key, fp, rid)
        if key is None:
            return self._pay(attempt)
        scoped = f"{user_id} {key}"  # keys are per user (a space is in neither)
        try:
            outcome = self.idempotency.begin(scoped, attempt.fingerprint)
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
            return self._in_flight()
        if outcome.kind == CHARGING:
            return self._answer_charging(attempt, outcome)
        attempt.token = outcome.token
        try:
            result = self._answer_from_record(attempt) or self._pay(attempt)
        except BaseException:
            if not attempt.charging:
                self._safe_store(self.idempotency.abort, scoped, attempt.token)
            raise
        if result.final or attempt.charging:
            body = json.dumps(result.body)
            self._safe_store(
                self.idempotency.finish,
                scoped,
                attempt.token,
                attempt.fingerprint,
                result.status,
                body,
            )
        else:
            self._safe_store(self.idempotency.abort, scoped, attempt.token)
        return result

    def _answer_charging(self, attempt: Attempt, outcome: Outcome) -> Result:
        """The key is marked charging (by a host that may have died before storing the
        answer): never charge again. This host's record of that order answers when it has
        one; else 409 while the charge may still run, then a final 504 (charge state unknown)."""
        try:
            record = self.records.get(outcome.orderid) if outcome.orderid else None
        except Exception:
            record = None
        if (
            record is not None
            and record.fingerprint == attempt.fingerprint
            and record.state in (CHARGED, DELIVERED)
        ):
            result = Result(200, {"orderid": record.orderid}, True, {"replay": True})
            result.headers["Idempotent-Replayed"] = "true"
            return result
        if outcome.age < self.settings.charge_age:  # age: since the charge started
            return self._in_flight()
        log.error(
            "payment %s (charged by %s): no answer stored, charge state unknown",
            outcome.orderid,
            outcome.host,
        )
        return unknown_result(orderid=outcome.orderid, replay=True)

    def _mark_charging(self, attempt: Attempt, orderid: str) -> Result | None:
        """Just before the gateway call: the key becomes `charging` for the TTL (on Redis: no
        host claims it again). None = go on and charge; else the answer, nothing charged."""
        if attempt.key is None:
            return None
        scoped = f"{attempt.user} {attempt.key}"
        try:
            owned = self.idempotency.charging(scoped, attempt.token, orderid)
        except Exception as exc:
            log.warning("idempotency store unavailable before the charge: %s", type(exc).__name__)
            self._settle(orderid, NOT_REACHED, "idempotency store unavailable")
            return error(503, "idempotency store unavailable", dependency="idempotency")
        if not owned:  # our claim ran out and may be another request's now
            log.warning("payment %s: Idempotency-Key claim lost before the charge", orderid)
            self._settle(orderid, NOT_REACHED, "idempotency claim lost")
            return self._in_flight()
        return None

    @staticmethod
    def _in_flight() -> Result:
        result = error(409, "a request with this Idempotency-Key is in progress")
        result.headers["Retry-After"] = RETRY_AFTER
        return result

    def _answer_from_record(self, attempt: Attempt) -> Result | None:
        """A claim we just took may hide an earlier attempt (its claim lost or expired)."""
        assert attempt.key is not None
        prior = self.records.find(attempt.user, attempt.key)
        if prior is None:
            return None
        if prior.fingerprint != attempt.fingerprint:
            # not stored for the key: the claim is dropped, the record keeps answering
            return error(422, "Idempotency-Key already used with another request")
        if prior.state in (CHARGED, DELIVERED):
            result = Result(200, {"orderid": prior.orderid}, True, {"replay": True})
            result.headers["Idempotent-Replayed"] = "true"
            return result
        if prior.state == PENDING and time.time() - prior.created < self.settings.pending_age:
            return self._in_flight()
        return unknown_result(orderid=prior.orderid, replay=True)

    @staticmethod
    def _safe_store(fn: Any, *args: Any) -> None:
        try:
            fn(*args)
        except Exception as exc:
            log.error("idempotency store update failed: %s", type(exc).__name__)
            metrics.inc(metrics.INTERNAL, "idempotency")

    def _pay(self, attempt: Attempt) -> Result:
        rid = attempt.rid
        # 1. the order, serialized now (strict JSON): nothing may fail on it after the charge
        orderid = str(uuid.uuid4())
        try:
            message = _dumps({"orderid": orderid, "user": attempt.user, "cart": attempt.cart})
            history = _dumps({"orderid": orderid, "cart": attempt.cart})
        except (ValueError, TypeError, RecursionError):
            return error(400, "cart not valid", detail="cart cannot be serialized as JSON")
        # 2. registered or anonymous: the check is sent now and read after the record's fsync
        #    (the two overlap); nothing is charged unless it answers
        check = self.deps.start_user_check(attempt.user, rid)
        # 3. the durable intent, before any money moves
        try:
            self.records.create(
                orderid, attempt.user, attempt.key, attempt.fingerprint, message, rid
            )
            written: Exception | None = None
        except Exception as exc:
            written = exc
        try:
            registered = check()
        except Exception as exc:
            if written is None:  # nothing charged: the record is settled `failed`
                self._settle(orderid, NOT_REACHED, f"user: {getattr(exc, 'kind', 'error')}")
            if not isinstance(exc, DependencyError):
                raise
            return error(503, "user service unavailable", dependency="user", reason=exc.kind)
        if written is not None:
            log.error("payment record not written: %s", type(written).__name__)
            return error(503, "payment records unavailable", dependency="state")
        # 4. the charge
        if self.settings.delay_ms:
            time.sleep(self.settings.delay_ms / 1000.0)
        refused = self._mark_charging(attempt, orderid)
        if refused is not None:
            return refused
        attempt.charging = True
        try:
            self.deps.charge(rid)
        except DependencyError as exc:
            return self._not_charged(orderid, exc)
        except Exception as exc:  # never expected; the gateway may have charged
            log.error("charge %s ended with %s", orderid, type(exc).__name__)
            return self._unknown(orderid, "error")
        try:
            return self._after_charge(attempt, registered, orderid, message, history)
        except Exception as exc:  # a bug after the charge: answer from the record
            log.exception("after the charge of %s", orderid)
            metrics.inc(metrics.INTERNAL, "after_charge")
            return self._answer_charged(orderid, exc)

    def _not_charged(self, orderid: str, exc: DependencyError) -> Result:
        """The charge did not answer 200. A 4xx is the gateway refusing it: nothing charged.
        A 5xx (the gateway's own error, or a proxy's 502/504 in front of it) may come after
        the money moved: unknown, like a lost answer (a released key would charge again)."""
        if exc.kind == "status" and exc.status < 500:
            self._settle(orderid, DECLINED, f"HTTP {exc.status}")
            return error(502, "payment declined by the gateway", dependency="gateway")
        if exc.kind in ("refused", "timeout"):  # no connection: no byte of the charge left
            self._settle(orderid, NOT_REACHED, exc.kind)
            return error(503, "payment gateway unavailable", dependency="gateway", reason=exc.kind)
        return self._unknown(orderid, "server_error" if exc.kind == "status" else exc.kind)

    def _unknown(self, orderid: str, cause: str) -> Result:
        # the gateway may have charged: final, a retry with the key must not charge again
        self._settle(orderid, UNKNOWN, f"gateway: {cause}")
        metrics.inc(metrics.UNKNOWN, cause)
        log.error("payment %s: charge state unknown (%s)", orderid, cause)
        return unknown_result(orderid=orderid)

    def _settle(self, orderid: str, state: str, note: str) -> None:
        try:
            self.records.settle(orderid, state, note)
        except Exception as exc:  # stays pending: the drainer makes it unknown
            log.error("payment %s: state %s not written: %s", orderid, state, type(exc).__name__)
            metrics.inc(metrics.INTERNAL, "record")

    def _answer_charged(self, orderid: str, exc: BaseException | None = None) -> Result:
        """After the charge, on an unexpected error: 200 when the order is durable (the record
        charged or delivered, or made charged now: the drainer publishes it), else 503."""
        try:
            record = self.records.get(orderid)
            if record is not None and record.state in (PENDING, UNKNOWN):
                self.records.charged(orderid, LATE_CONFIRM_WINDOW)
                record = self.records.get(orderid)
        except Exception:
            record = None
        if record is not None and record.state in (CHARGED, DELIVERED):
            return Result(200, {"orderid": orderid}, True, {"orderid": orderid, "order": "record"})
        return error(503, "the order could not be recorded", final=True, dependency="state")

    def _after_charge(
        self, attempt: Attempt, registered: bool, orderid: str, message: bytes, history: bytes
    ) -> Result:
        """The order made durable — by the broker's confirm, or else by the record committed
        `charged` — and only then order history and cart delete."""
        rid = attempt.rid
        ticket = self._publish(orderid, message, rid)
        state = ticket.wait(self.settings.publish_timeout)
        confirmed = state == CONFIRMED  # durable in RabbitMQ: no fsync needed here
        if confirmed:
            where = "broker"
        else:
            try:
                durable = self.records.charged(orderid, self._hold(ticket))
            except Exception as exc:
                log.error("payment %s: charged not written: %s", orderid, type(exc).__name__)
                metrics.inc(metrics.INTERNAL, "record")
                durable = False
            if not durable:  # charged, and the order is nowhere: 503, the record goes to ops
                return error(503, "the order could not be recorded", final=True, dependency="state")
            metrics.inc(metrics.OUTBOX, "stored")
            self._wake_drainer()
            where = "outbox"
        # the order is durable: order history and cart delete (their failures are counted).
        # The first of them is sent before the `delivered` update and the metrics, and its
        # answer read after them (they overlap its round trip).
        calls: list[tuple[str, str, Any, tuple[Any, ...]]] = []
        if registered:
            calls.append(("user", "history", self.deps.start_history, (attempt.user, history, rid)))
        calls.append(("cart", "delete", self.deps.start_delete_cart, (attempt.user, rid)))
        first = self._start_after(*calls[0])
        if confirmed:
            self._delivered(orderid)
        n = units(attempt.cart)
        metrics.safe(lambda: metrics.SOLD.inc(n), "metrics")
        metrics.safe(lambda: metrics.UNITS.observe(n), "metrics")
        metrics.safe(lambda: metrics.CART_VALUE.observe(attempt.cart["total"]), "metrics")
        first()
        for call in calls[1:]:
            self._start_after(*call)()
        return Result(200, {"orderid": orderid}, True, {"orderid": orderid, "order": where})

    @staticmethod
    def _hold(ticket: Ticket) -> float:
        """How long the drainer leaves a charged record alone: a publish this request gave up
        on may still be confirmed (that marks it delivered); else at once."""
        return LATE_CONFIRM_WINDOW if ticket.state == ABANDONED and ticket.sent else 0.0

    def _delivered(self, orderid: str) -> None:
        try:
            self.records.confirmed(orderid)
        except Exception as exc:  # stays pending: the drainer makes it unknown, for ops
            log.error("payment %s: delivered not written: %s", orderid, type(exc).__name__)
            metrics.inc(metrics.INTERNAL, "record")

    def _publish(self, orderid: str, message: bytes, rid: str) -> Ticket:
        try:
            return self.publisher.publish(orderid, message, {"x-request-id": rid})
        except Exception as exc:
            log.error("publish of %s failed: %s", orderid, type(exc).__name__)
            ticket = Ticket(orderid)
            ticket.resolve(FAILED)
            return ticket

    def _wake_drainer(self) -> None:
        drainer = getattr(self, "drainer", None)
        if drainer is not None:
            drainer.wake()

    def _start_after(
        self, dependency: str, operation: str, start: Any, args: tuple[Any, ...]
    ) -> Callable[[], None]:
        """Send a call after the charge; the returned function reads its answer. Neither part
        raises: failures are logged and counted."""
        try:
            finish = start(*args)
        except Exception as exc:
            raised = exc

            def failed() -> int:
                raise raised

            finish = failed
        return lambda: self._call_after(dependency, operation, finish)

    def _call_after(self, dependency: str, operation: str, fn: Any, *args: Any) -> None:
        try:
            status = fn(*args)
        except DependencyError as exc:
            metrics.inc(metrics.DEP_ERRORS, dependency, operation)
            log.warning("%s %s failed after the charge: %s", dependency, operation, exc.kind)
            return
        except Exception as exc:
            metrics.inc(metrics.INTERNAL, f"{dependency}_{operation}")
            log.error("%s %s failed after the charge: %s", dependency, operation, exc)
            return
        if status != 200:
            if status != 404:  # 404 = no cart / unknown user: nothing to undo
                metrics.inc(metrics.DEP_ERRORS, dependency, operation)
            log.warning("%s %s answered %s after the charge", dependency, operation, status)

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
            counts: dict[str, int] | None = self.records.counts()
        except Exception:
            counts = None
        pending = counts[CHARGED] if counts is not None else None
        outbox_ok = pending is not None and pending < s.outbox_max and self.records.writable()
        ready = user and outbox_ok and (broker or not s.health_require_broker)

        def word(up: bool) -> str:
            return "connected" if up else "disconnected"

        body = {
            "status": "ok" if ready else "unavailable",
            "cart": word(cart),
            "user": word(user),
            "rabbitmq": word(broker),
            "rabbitmq_host": (self.publisher.host or None) if broker else None,
            "outbox": {"pending": pending, "writable": outbox_ok},
            "payments": {"unknown": counts[UNKNOWN] if counts is not None else None},
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


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), allow_nan=False).encode()
