"""The durable local outbox: orders the broker has not confirmed, in SQLite under the state dir.

Shared by every uWSGI worker on the host. Rows are written with synchronous=FULL (the 200 for
such an order promises it survives a crash) and delivered by `Drainer` threads: a worker claims
a batch under a lease (so no other worker publishes the same rows), publishes them with
confirms and deletes each confirmed row. A row is deleted only after its confirm; a publish
this worker gave up on and that the broker confirms later deletes its row as well.
"""

from __future__ import annotations

import logging
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from . import sqlitedb
from .amqp import ABANDONED, CONFIRMED, Ticket

log = logging.getLogger("payment.outbox")

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    orderid TEXT PRIMARY KEY,
    body BLOB NOT NULL,
    request_id TEXT NOT NULL,
    created REAL NOT NULL,
    not_before REAL NOT NULL,
    claimed_by TEXT,
    claimed_until REAL NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    uncertain INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (not_before);
"""


@dataclass(frozen=True)
class Row:
    orderid: str
    body: bytes
    request_id: str
    uncertain: bool
    created: float
    attempts: int


class Outbox:
    def __init__(self, state_dir: str, synchronous: str = "FULL") -> None:
        os.makedirs(state_dir, mode=0o750, exist_ok=True)
        self.path = os.path.join(state_dir, "outbox.sqlite3")
        self._synchronous = synchronous
        self._local = threading.local()
        self.owner = f"{socket.gethostname()}/{os.getpid()}"
        db = self._db()
        with db:
            db.executescript(SCHEMA)

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlitedb.connect(self.path, self._synchronous)
            self._local.db = db
        return db

    def add(
        self, orderid: str, body: bytes, request_id: str, delay: float, uncertain: bool
    ) -> None:
        now = time.time()
        db = self._db()
        db.execute(
            "INSERT OR IGNORE INTO outbox (orderid, body, request_id, created, not_before,"
            " uncertain) VALUES (?, ?, ?, ?, ?, ?)",
            (orderid, body, request_id, now, now + delay, int(uncertain)),
        )

    def delete(self, orderid: str) -> None:
        self._db().execute("DELETE FROM outbox WHERE orderid = ?", (orderid,))

    def claim(self, limit: int, lease: float) -> list[Row]:
        now = time.time()
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            rows = db.execute(
                "SELECT orderid, body, request_id, uncertain, created, attempts FROM outbox"
                " WHERE not_before <= ? AND claimed_until < ? ORDER BY created LIMIT ?",
                (now, now, limit),
            ).fetchall()
            db.executemany(
                "UPDATE outbox SET claimed_by = ?, claimed_until = ?, attempts = attempts + 1"
                " WHERE orderid = ?",
                [(self.owner, now + lease, r[0]) for r in rows],
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return [Row(r[0], bytes(r[1]), r[2], bool(r[3]), r[4], r[5] + 1) for r in rows]

    def release(self, orderid: str, delay: float) -> None:
        self._db().execute(
            "UPDATE outbox SET claimed_by = NULL, claimed_until = 0, not_before = ?"
            " WHERE orderid = ? AND claimed_by = ?",
            (time.time() + delay, orderid, self.owner),
        )

    def pending(self) -> int:
        return int(self._db().execute("SELECT count(*) FROM outbox").fetchone()[0])

    def writable(self) -> bool:
        return os.access(self.path, os.W_OK) and os.access(os.path.dirname(self.path), os.W_OK)


class Drainer:
    """Delivers due outbox rows while this worker's publisher is connected."""

    def __init__(
        self,
        outbox: Outbox,
        submit: Callable[[Row], Ticket],
        connected: Callable[[], bool],
        poll: float,
        lease: float,
        confirm_timeout: float,
        late_window: float,
        on_delivered: Callable[[Row], None] | None = None,
        ledger: Callable[[float, set[str]], set[str]] | None = None,
        on_duplicate: Callable[[Row], None] | None = None,
    ) -> None:
        self.outbox = outbox
        self._submit = submit
        self._connected = connected
        self._poll = poll
        self._lease = lease
        self._confirm_timeout = confirm_timeout
        self._late_window = late_window
        self._on_delivered = on_delivered
        self._ledger = ledger
        self._on_duplicate = on_duplicate
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="outbox-drainer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        while True:
            self._wake.wait(self._poll)
            self._wake.clear()
            try:
                while self._connected() and self.drain_once():
                    pass
            except Exception:
                log.exception("outbox drain failed")
                time.sleep(self._poll)

    def drain_once(self, batch: int = 200) -> int:
        """Deliver one batch (publishes pipelined); returns how many rows were delivered."""
        rows = self.outbox.claim(batch, self._lease)
        rows = self._resolve_uncertain(rows)
        tickets = [(row, self._submit(row)) for row in rows]
        delivered = 0
        for row, ticket in tickets:
            state = ticket.wait(self._confirm_timeout)
            if state == CONFIRMED:
                self.outbox.delete(row.orderid)
                delivered += 1
                if self._on_delivered is not None:
                    self._on_delivered(row)
            elif state == ABANDONED and ticket.sent:
                # a confirm may still come (and delete the row); retry only after that window
                self.outbox.release(row.orderid, self._late_window)
            else:
                self.outbox.release(row.orderid, self._poll)
        return delivered

    def _resolve_uncertain(self, rows: list[Row]) -> list[Row]:
        """Drop uncertain rows the ledger shows as delivered; keep the rest to publish."""
        uncertain = [r for r in rows if r.uncertain]
        if not uncertain or self._ledger is None:
            return rows
        try:
            seen = self._ledger(
                min(r.created for r in uncertain) - 10.0, {r.orderid for r in uncertain}
            )
        except Exception as exc:
            log.warning("ledger lookup failed: %s", type(exc).__name__)
            keep = []
            for row in rows:
                if row.uncertain and row.attempts < 10:
                    self.outbox.release(row.orderid, max(self._poll, 1.0))
                else:  # certain rows, or too many tries: publish (at-least-once)
                    keep.append(row)
            return keep
        keep = []
        for row in rows:
            if row.uncertain and row.orderid in seen:
                self.outbox.delete(row.orderid)
                log.info("order %s was delivered before the connection broke", row.orderid)
                if self._on_duplicate is not None:
                    self._on_duplicate(row)
            else:
                keep.append(row)
        return keep
