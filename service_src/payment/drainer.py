"""Publishes every `charged` record the broker has not confirmed (one drainer per worker).

While this worker's publisher is connected it claims due `charged` records under a lease (one
worker per record), publishes them pipelined with confirms, and marks each `delivered` only
on its confirm. Any other outcome (nack, returned, connection lost, no confirm in time) leaves
the record `charged`: it is published again later, with the same message_id. That is
at-least-once: a broker killed after storing a message but before its confirm gets it twice,
and consumers de-duplicate by message_id. Nothing but a confirm ends a charged record.

It also turns `pending` records older than the charge can take (the worker died during the
gateway call) into `unknown`, and forgets settled records after the retention time.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from .amqp import ABANDONED, CONFIRMED, Ticket
from .records import Record, Records

log = logging.getLogger("payment.drainer")


class Drainer:
    def __init__(
        self,
        records: Records,
        submit: Callable[[Record], Ticket],
        connected: Callable[[], bool],
        poll: float,
        lease: float,
        confirm_timeout: float,
        late_window: float,
        pending_age: float,
        retention: float,
        on_delivered: Callable[[Record], None] | None = None,
        on_unknown: Callable[[str], None] | None = None,
    ) -> None:
        self.records = records
        self._submit = submit
        self._connected = connected
        self._poll = poll
        self._lease = lease
        self._confirm_timeout = confirm_timeout
        self._late_window = late_window
        self._pending_age = pending_age
        self._retention = retention
        self._on_delivered = on_delivered
        self._on_unknown = on_unknown
        self._last_sweep = 0.0
        self._last_purge = 0.0
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="payment-drainer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        while True:
            try:  # nothing ends this thread: it is the only one that publishes a charged order
                self._wake.wait(self._poll)
                self._wake.clear()
                self.sweep()
                while self._connected() and self.drain_once():
                    pass
            except Exception:
                log.exception("drain failed")
                time.sleep(self._poll)

    def sweep(self, force: bool = False) -> list[str]:
        """Stale pending -> unknown (logged, counted); purge old settled records."""
        now = time.monotonic()
        if not force and now - self._last_sweep < 5.0:
            return []
        self._last_sweep = now
        stale = self.records.expire_pending(self._pending_age)
        for orderid in stale:
            log.error("payment %s: no gateway outcome recorded (worker ended): unknown", orderid)
            if self._on_unknown is not None:
                self._on_unknown(orderid)
        if now - self._last_purge > 60.0:
            self._last_purge = now
            self.records.purge(self._retention)
        return stale

    def drain_once(self, batch: int = 200) -> int:
        """Deliver one batch (publishes pipelined); returns how many were confirmed. The
        batch's confirms are awaited against one deadline, confirm_timeout after the last
        publish: the batch is settled well within its lease (one wait per row, in turn,
        could hold 200 rows for 600 s against a 60 s lease, and another worker would claim
        and publish them again while they were still in flight)."""
        rows = self.records.claim(batch, self._lease)
        tickets = [(row, self._submit(row)) for row in rows]
        deadline = time.monotonic() + self._confirm_timeout
        delivered = 0
        for row, ticket in tickets:
            state = ticket.wait(max(deadline - time.monotonic(), 0.0))
            try:
                delivered += self._settle(row, ticket, state)
            except Exception:  # one row's bookkeeping failed: the others are still settled
                log.exception("payment %s: drain bookkeeping failed", row.orderid)
        return delivered

    def _settle(self, row: Record, ticket: Ticket, state: str) -> int:
        if state == CONFIRMED:
            self.records.delivered(row.orderid)
            if self._on_delivered is not None:
                self._on_delivered(row)
            return 1
        if state == ABANDONED and ticket.sent:
            # a confirm may still come (and mark it delivered); retry after that window
            self.records.release(row.orderid, self._late_window)
        else:  # failed, nacked, returned, or sent and then the connection died: again
            self.records.release(row.orderid, self._poll)
        return 0
