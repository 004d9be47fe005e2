"""The order publisher: one AMQP connection per uWSGI worker, owned by one I/O thread.

Request threads hand a message over (`publish`) and wait on a `Ticket` for the broker's
publisher confirm. The I/O thread runs pika's SelectConnection: it declares the exchange,
the durable queue and its binding on every (re)connect, publishes persistent messages with
`mandatory` and `message_id = orderid`, pipelines confirms (many messages in flight, acks
matched by delivery tag), answers heartbeats while idle and reconnects with backoff.

Several brokers (AMQP_HOST `rabbit1,rabbit2,...`, all on AMQP_PORT): pika's connection
workflow (`SelectConnection.create_connection`) tries them in order and keeps the first that
completes the AMQP handshake. After a connection is lost the next attempt starts with the
host after the lost one (then wraps around), so a dead node is tried last.

AMQPS (AMQP_TLS=true): every host gets pika.SSLOptions with one verifying SSL context (the
CA of AMQP_CA_FILE, else the system's trust store) and server_hostname = that host, so the
broker's certificate must chain to the CA *and* name the host as AMQP_HOST lists it.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import random
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

import pika
from pika.adapters.select_connection import IOLoop
from pika.exchange_type import ExchangeType

from .config import Settings

log = logging.getLogger("payment.amqp")

CONFIRMED = "confirmed"  # the broker confirmed: the message is in the queue, persisted
FAILED = "failed"  # certainly not queued (not connected, nacked, unroutable)
UNCERTAIN = "uncertain"  # sent, then the connection died before the confirm
ABANDONED = "abandoned"  # the waiter gave up (timeout); see Ticket.sent


class Ticket:
    """One publish, as seen by the thread that waits for it."""

    __slots__ = ("_done", "_lock", "orderid", "sent", "state")

    def __init__(self, orderid: str) -> None:
        self.orderid = orderid
        self.state: str | None = None
        self.sent = False
        self._lock = threading.Lock()
        self._done = threading.Event()

    def resolve(self, state: str) -> bool:
        """Set the outcome (I/O thread); False when the waiter had already given up."""
        with self._lock:
            if self.state is not None:
                return False
            self.state = state
        self._done.set()
        return True

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def mark_sent(self) -> bool:
        """Called just before basic_publish; False when the waiter gave up (do not send)."""
        with self._lock:
            if self.state is not None:
                return False
            self.sent = True
            return True

    def wait(self, timeout: float) -> str:
        if self._done.wait(timeout):
            return self.state or FAILED
        with self._lock:
            if self.state is None:
                self.state = ABANDONED
            return self.state


def tls_context(settings: Settings) -> ssl.SSLContext:
    """The client context of AMQPS: certificate and host name verified (CERT_REQUIRED,
    check_hostname), TLS 1.2 or newer (Python's defaults)."""
    return ssl.create_default_context(cafile=settings.amqp_ca_file or None)


def ssl_options(
    settings: Settings, host: str, context: ssl.SSLContext | None = None
) -> pika.SSLOptions | None:
    """pika's TLS options for one broker host (None without AMQP_TLS): the host name the
    certificate must name is the host as AMQP_HOST lists it (an IP must be an IP SAN)."""
    if not settings.amqp_tls:
        return None
    return pika.SSLOptions(context or tls_context(settings), server_hostname=host.rstrip("."))


def connection_parameters(settings: Settings, **options: Any) -> list[pika.ConnectionParameters]:
    """One ConnectionParameters per broker host of AMQP_HOST, in its order (each with its
    own SSLOptions under AMQP_TLS)."""
    common: dict[str, Any] = {
        "port": settings.amqp_port,
        "virtual_host": settings.amqp_vhost,
        "credentials": pika.PlainCredentials(settings.amqp_user, settings.amqp_pass),
        "connection_attempts": 1,  # one pass over the hosts; the caller retries
        **options,
    }
    context = tls_context(settings) if settings.amqp_tls else None
    return [
        pika.ConnectionParameters(
            host=host, ssl_options=ssl_options(settings, host, context), **common
        )
        for host in settings.amqp_hosts
    ]


def connect_error(exc: BaseException) -> str:
    """What went wrong in pika's connection workflow: its last attempt's error (e.g. a TLS
    certificate verification failure), not the workflow's wrapper, whose str() is empty."""
    attempts = getattr(exc, "exceptions", ())
    if attempts:
        return repr(attempts[-1])
    return f"{type(exc).__name__}: {exc}"


class Publisher:
    def __init__(
        self,
        settings: Settings,
        on_ready: Callable[[], None] | None = None,
        on_late_confirm: Callable[[str], None] | None = None,
    ) -> None:
        self.settings = settings
        self._on_ready = on_ready
        self._on_late_confirm = on_late_confirm
        self._params = connection_parameters(
            settings,
            heartbeat=settings.amqp_heartbeat,
            blocked_connection_timeout=60,
            socket_timeout=max(settings.connect_timeout, 1.0),
            stack_timeout=max(settings.connect_timeout * 5, 5.0),
            client_properties={"connection_name": f"payment {socket.gethostname()}/{os.getpid()}"},
        )
        self._first = 0  # index in _params of the host the next connect tries first
        self.host = ""  # the broker host of the open connection
        self._lock = threading.Lock()
        self._ready = False
        self._stopping = False
        self._conn: pika.SelectConnection | None = None
        self._ioloop: IOLoop | None = None
        self._channel = None
        self._queued: set[Ticket] = set()
        self._pending: dict[int, Ticket] = {}
        self._returned: set[str] = set()
        self._tag = 0
        self.last_error = ""
        self._thread = threading.Thread(target=self._run, name="amqp-publisher", daemon=True)

    # -- public, any thread ------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self._ready

    def start(self) -> None:
        self._thread.start()

    def wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self._ready and time.monotonic() < deadline:
            time.sleep(0.02)
        return self._ready

    def publish(self, orderid: str, body: bytes, headers: dict[str, str]) -> Ticket:
        ticket = Ticket(orderid)
        with self._lock:
            conn = self._conn
            if not self._ready or conn is None:
                ticket.resolve(FAILED)
                return ticket
            self._queued.add(ticket)
            try:
                conn.ioloop.add_callback_threadsafe(
                    functools.partial(self._publish, ticket, body, headers)
                )
            except Exception:  # the loop is going away
                self._queued.discard(ticket)
                ticket.resolve(FAILED)
        return ticket

    def stop(self) -> None:
        self._stopping = True
        with self._lock:
            ioloop = self._ioloop
        if ioloop is not None:
            with contextlib.suppress(Exception):
                ioloop.add_callback_threadsafe(self._close)

    # -- the I/O thread ----------------------------------------------------------------
    def _run(self) -> None:
        backoff = 0.25
        while not self._stopping:
            opened_at = time.monotonic()
            ioloop = IOLoop()
            with self._lock:
                self._ioloop = ioloop
            try:
                hosts = self._params[self._first :] + self._params[: self._first]
                pika.SelectConnection.create_connection(
                    hosts, self._on_connected, custom_ioloop=ioloop
                )
                if not self._stopping:  # stop() may have come before _ioloop was set
                    ioloop.start()
            except Exception as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("amqp loop error: %s", self.last_error)
            self._after_loop()
            with contextlib.suppress(Exception):
                ioloop.close()
            if self._stopping:
                break
            if time.monotonic() - opened_at > 30:
                backoff = 0.25  # it ran for a while: a fresh outage, retry quickly
            time.sleep(backoff * (0.5 + random.random()))
            backoff = min(backoff * 2, 15.0)

    def _after_loop(self) -> None:
        with self._lock:
            self._ready = False
            self._conn = None
            self._ioloop = None
            self.host = ""
            self._channel = None
            queued, self._queued = self._queued, set()
            pending, self._pending = self._pending, {}
            self._returned.clear()
        for ticket in queued:  # never handed to the broker
            ticket.resolve(FAILED)
        for ticket in pending.values():  # sent, fate unknown
            ticket.resolve(UNCERTAIN)

    def _close(self) -> None:
        conn = self._conn
        if conn is not None and conn.is_open:
            conn.close()  # -> _on_closed stops the loop
        elif (conn is None or not conn.is_closing) and self._ioloop is not None:
            self._ioloop.stop()  # still connecting (or closed): stop at once

    def _on_connected(self, result: pika.SelectConnection | BaseException) -> None:
        """pika's connection workflow is done: a connection to one of the hosts, or the
        error of the last attempt (every host failed)."""
        if isinstance(result, BaseException):
            self.last_error = f"connect: {connect_error(result)}"
            log.warning("amqp connect failed (%s): %s", self.settings.amqp_host, self.last_error)
            if self._ioloop is not None:
                self._ioloop.stop()
            return
        conn = result
        host = conn.params.host
        hosts = self.settings.amqp_hosts
        # after this connection is lost, start with the next host (this one is likely down)
        self._first = (hosts.index(host) + 1) % len(hosts) if host in hosts else 0
        with self._lock:
            self._conn = conn
            self.host = host
        conn.add_on_close_callback(self._on_closed)
        if self._stopping:
            conn.close()
            return
        log.info(
            "amqp connected to %s:%s%s", host, self.settings.amqp_port,
            " (TLS)" if self.settings.amqp_tls else "",
        )  # fmt: skip
        self._on_open(conn)

    def _on_open(self, conn: pika.SelectConnection) -> None:
        conn.channel(on_open_callback=self._on_channel_open)

    def _on_closed(self, conn: pika.SelectConnection, reason: BaseException) -> None:
        with self._lock:
            self._ready = False
        if not self._stopping:
            self.last_error = f"closed: {type(reason).__name__}: {reason}"
            log.warning("amqp connection closed: %s", self.last_error)
        conn.ioloop.stop()

    def _on_channel_open(self, channel) -> None:
        s = self.settings
        self._channel = channel
        self._tag = 0
        channel.add_on_close_callback(self._on_channel_closed)
        channel.add_on_return_callback(self._on_return)
        channel.confirm_delivery(ack_nack_callback=self._on_confirm)
        channel.exchange_declare(
            exchange=s.amqp_exchange,
            exchange_type=ExchangeType.direct,
            durable=True,
            callback=lambda _f: channel.queue_declare(
                queue=s.amqp_queue,
                durable=True,
                callback=lambda _f: channel.queue_bind(
                    queue=s.amqp_queue,
                    exchange=s.amqp_exchange,
                    routing_key=s.amqp_routing_key,
                    callback=self._on_bound,
                ),
            ),
        )

    def _on_bound(self, _frame) -> None:
        with self._lock:
            self._ready = True
        self.last_error = ""
        log.info(
            "amqp ready: exchange %s -> queue %s",
            self.settings.amqp_exchange,
            self.settings.amqp_queue,
        )
        if self._on_ready is not None:
            self._on_ready()

    def _on_channel_closed(self, channel, reason: BaseException) -> None:
        self.last_error = f"channel closed: {reason}"
        if not self._stopping:
            log.warning("amqp channel closed: %s", reason)
        with self._lock:
            self._ready = False
        conn = self._conn
        if conn is not None and conn.is_open:
            conn.close()

    def _publish(self, ticket: Ticket, body: bytes, headers: dict[str, str]) -> None:
        with self._lock:
            self._queued.discard(ticket)
        channel = self._channel
        if not self._ready or channel is None or not channel.is_open:
            ticket.resolve(FAILED)
            return
        if not ticket.mark_sent():
            return  # the waiter gave up first: it keeps the order in the outbox
        s = self.settings
        props = pika.BasicProperties(
            content_type="application/json",
            delivery_mode=pika.DeliveryMode.Persistent,
            message_id=ticket.orderid,
            timestamp=int(time.time()),
            headers=headers,
        )
        try:
            channel.basic_publish(s.amqp_exchange, s.amqp_routing_key, body, props, mandatory=True)
        except Exception as exc:
            self.last_error = f"publish: {exc}"
            ticket.resolve(UNCERTAIN)
            return
        self._tag += 1
        self._pending[self._tag] = ticket

    def _on_return(self, channel, method, props, body) -> None:
        if props.message_id:
            self._returned.add(props.message_id)
        log.error(
            "amqp message %s unroutable (%s): re-declaring", props.message_id, method.reply_text
        )

    def _on_confirm(self, frame) -> None:
        method = frame.method
        ack = isinstance(method, pika.spec.Basic.Ack)
        tags = (
            [t for t in self._pending if t <= method.delivery_tag]
            if method.multiple
            else [method.delivery_tag]
        )
        redeclare = False
        for tag in tags:
            ticket = self._pending.pop(tag, None)
            if ticket is None:
                continue
            returned = ticket.orderid in self._returned
            if returned:
                self._returned.discard(ticket.orderid)
                redeclare = True
            state = CONFIRMED if ack and not returned else FAILED
            late = not ticket.resolve(state) and state == CONFIRMED
            if late and self._on_late_confirm is not None:
                try:
                    self._on_late_confirm(ticket.orderid)
                except Exception:
                    log.exception("late confirm handler failed")
        if redeclare:  # the queue or its binding went away: reconnect declares them again
            self._close()
