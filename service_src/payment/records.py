"""The durable payment record: one row per payment attempt, written before any money moves.

SQLite in WAL mode under the state dir (`payments.sqlite3`), shared by every worker of the
host. Each state change that matters for money is committed with synchronous=FULL before the
next step runs:

    pending  --gateway 200-->              charged --broker confirm--> delivered
       |----gateway non-200------------->  declined   (nothing charged)
       |----gateway unreachable--------->  failed     (nothing charged)
       |----gateway timeout / no answer->  unknown    (may have been charged: ops decide)
       '----older than the gateway timeout, found by the drainer (worker died)--> unknown

The record holds the full order message (built and serialized before the charge), so a
`charged` record is the order: the drainer publishes every `charged` record until the broker
confirms it. Only that confirm moves it to `delivered`. `unknown` records are never published
by the service; `payment.ops` lists, shows and (after a check with the gateway) republishes
them. A record may be found by (user, Idempotency-Key): a retry whose key claim was lost or
expired is answered from it, never charged again.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

from . import sqlitedb
from .config import ConfigError

PENDING = "pending"
CHARGED = "charged"
DELIVERED = "delivered"
DECLINED = "declined"
FAILED = "failed"
UNKNOWN = "unknown"
STATES = (PENDING, CHARGED, DELIVERED, DECLINED, FAILED, UNKNOWN)
NOT_CHARGED = (DECLINED, FAILED)

SCHEMA = """
CREATE TABLE IF NOT EXISTS payments (
    orderid TEXT PRIMARY KEY,
    user TEXT NOT NULL,
    idem_key TEXT,
    fingerprint TEXT NOT NULL,
    state TEXT NOT NULL,
    body BLOB NOT NULL,
    request_id TEXT NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    claimed_until REAL NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    note TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS payments_key ON payments (user, idem_key)
    WHERE idem_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS payments_state ON payments (state, claimed_until);
CREATE INDEX IF NOT EXISTS payments_updated ON payments (updated);
"""
OPEN = (PENDING, CHARGED, UNKNOWN)  # the states that need the service or an operator
KEYLESS_RETENTION = 3600.0  # a settled payment without Idempotency-Key: nothing replays it
COLUMNS = (
    "orderid, user, idem_key, fingerprint, state, body, request_id, created, updated,"
    " claimed_until, attempts, note"
)


INSERT = (
    "INSERT INTO payments (orderid, user, idem_key, fingerprint, state, body,"
    " request_id, created, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


class _Insert:
    __slots__ = ("done", "error", "row")

    def __init__(self, row: tuple) -> None:
        self.row = row
        self.done = False
        self.error: Exception | None = None


@dataclass(frozen=True)
class Record:
    orderid: str
    user: str
    key: str | None
    fingerprint: str
    state: str
    body: bytes
    request_id: str
    created: float
    updated: float
    claimed_until: float
    attempts: int
    note: str

    @classmethod
    def of(cls, row: tuple) -> Record:
        return cls(
            row[0], row[1], row[2], row[3], row[4], bytes(row[5]), row[6], row[7], row[8],
            row[9], row[10], row[11],
        )  # fmt: skip


class Records:
    def __init__(self, state_dir: str, synchronous: str = "FULL") -> None:
        try:
            self._open(state_dir, synchronous)
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(
                f"PAYMENT_STATE_DIR {state_dir!r} cannot hold the payment records: {exc}"
            ) from None

    def _open(self, state_dir: str, synchronous: str) -> None:
        os.makedirs(state_dir, mode=0o750, exist_ok=True)
        self.path = os.path.join(state_dir, "payments.sqlite3")
        self._synchronous = synchronous
        self._local = threading.local()
        self._write_lock = threading.Lock()
        self._queue_lock = threading.Lock()
        self._queue: list[_Insert] = []
        self._io_lock = threading.Lock()
        self._lock_fd = _lock_file(self.path + ".lock")
        self.owner = f"{socket.gethostname()}/{os.getpid()}"
        db = self._db()
        db.executescript(SCHEMA)
        import_outbox(state_dir, self)

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """Serialize this host's writers: the worker's threads on a Python lock, the workers
        on an flock of `payments.sqlite3.lock`. Both wake a waiter as soon as the holder is
        done; SQLite's own busy handler (still there for other processes, e.g. payment.ops)
        sleeps 1, 2, 5, 10 ... ms between attempts while a commit's fsync holds the lock."""
        with self._io_lock:
            fd = self._lock_fd
            if fd is None:  # no lock file: SQLite's busy handler alone
                yield
                return
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)

    def _db(self, durable: bool = True) -> sqlite3.Connection:
        """This thread's connection: FULL (fsync at commit), or NORMAL for `delivered`."""
        name = "db" if durable else "db_normal"
        db = getattr(self._local, name, None)
        if db is None:
            sync = self._synchronous if durable or self._synchronous == "OFF" else "NORMAL"
            db = sqlitedb.connect(self.path, sync)
            setattr(self._local, name, db)
        return db

    # -- the request path --------------------------------------------------------------
    def create(
        self, orderid: str, user: str, key: str | None, fingerprint: str, body: bytes, rid: str
    ) -> None:
        """Insert the `pending` record; returns once it is committed with an fsync.

        Group commit: the worker's threads queue their rows; one of them (holding the
        write lock) commits everything queued in one transaction, one fsync, and every
        row's caller returns after that commit. The threads of a worker wait on a Python
        lock (woken at once) rather than in SQLite's busy handler, which sleeps 1, 2, 5,
        10 ms ... between attempts while another connection holds the write lock."""
        now = time.time()
        entry = _Insert((orderid, user, key, fingerprint, PENDING, body, rid, now, now))
        with self._queue_lock:
            self._queue.append(entry)
        with self._write_lock:
            if not entry.done:
                with self._queue_lock:
                    batch, self._queue = self._queue, []
                error: Exception | None = None
                try:
                    self._insert([e.row for e in batch])
                except Exception as exc:
                    error = exc
                except BaseException:  # this thread is interrupted: no row is durable for sure
                    error = RuntimeError("the commit of the pending records was interrupted")
                    raise
                finally:  # every row of the batch learns its fate, whatever happened here
                    for e in batch:
                        e.error = error
                        e.done = True
        if entry.error is not None:
            raise entry.error

    def _insert(self, rows: list[tuple]) -> None:
        with self._writing():
            db = self._db()
            if len(rows) == 1:
                db.execute(INSERT, rows[0])
                return
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany(INSERT, rows)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def settle(self, orderid: str, state: str, note: str = "") -> bool:
        """pending -> declined | failed | unknown; False when the record is not pending."""
        with self._writing():
            cur = self._db().execute(
                "UPDATE payments SET state = ?, note = ?, updated = ? WHERE orderid = ?"
                " AND state = ?",
                (state, note, time.time(), orderid, PENDING),
            )
            return cur.rowcount == 1

    def charged(self, orderid: str, hold: float) -> bool:
        """pending|unknown -> charged, held `hold` s for the request's own publish. True when
        the order is durable: made charged now, or already delivered (the broker's late
        confirm of the request's own publish came first)."""
        now = time.time()
        with self._writing():
            db = self._db()
            cur = db.execute(
                "UPDATE payments SET state = ?, updated = ?, claimed_until = ? WHERE orderid = ?"
                " AND state IN (?, ?)",
                (CHARGED, now, now + hold, orderid, PENDING, UNKNOWN),
            )
            if cur.rowcount == 1:
                return True
            row = db.execute("SELECT state FROM payments WHERE orderid = ?", (orderid,)).fetchone()
            return row is not None and row[0] in (CHARGED, DELIVERED)

    def delivered(self, orderid: str, note: str | None = None) -> None:
        """charged -> delivered, on the broker's confirm only (a lost update republishes).
        Also pending|unknown -> delivered: a late confirm of the request's own publish may
        come before its `charged` write (a publish happens only after the charge). `note`,
        when given, replaces the record's note. No fsync (see `confirmed`)."""
        with self._writing():
            self._db(durable=False).execute(
                "UPDATE payments SET state = ?, note = COALESCE(?, note), updated = ?"
                " WHERE orderid = ? AND state IN (?, ?, ?)",
                (DELIVERED, note, time.time(), orderid, CHARGED, PENDING, UNKNOWN),
            )

    def confirmed(self, orderid: str) -> None:
        """pending|unknown -> delivered: the broker confirmed the request's own publish, so the
        order is durable there; no fsync (a crash that loses this update leaves the record
        pending, then unknown: listed for ops, never published blindly)."""
        self.delivered(orderid, "confirmed")

    def release(self, orderid: str, delay: float) -> None:
        """A charged record the drainer may publish after `delay` s."""
        with self._writing():
            self._db().execute(
                "UPDATE payments SET claimed_until = ? WHERE orderid = ? AND state = ?",
                (time.time() + delay, orderid, CHARGED),
            )

    def find(self, user: str, key: str) -> Record | None:
        """The latest attempt with this (user, key) that may have charged."""
        row = (
            self._db()
            .execute(
                f"SELECT {COLUMNS} FROM payments WHERE user = ? AND idem_key = ?"
                " AND state NOT IN (?, ?) ORDER BY created DESC LIMIT 1",
                (user, key, *NOT_CHARGED),
            )
            .fetchone()
        )
        return Record.of(row) if row else None

    # -- the drainer -------------------------------------------------------------------
    def claim(self, limit: int, lease: float) -> list[Record]:
        now = time.time()
        with self._writing():
            db = self._db()
            db.execute("BEGIN IMMEDIATE")
            try:
                rows = db.execute(
                    f"SELECT {COLUMNS} FROM payments WHERE state = ? AND claimed_until < ?"
                    " ORDER BY created LIMIT ?",
                    (CHARGED, now, limit),
                ).fetchall()
                db.executemany(
                    "UPDATE payments SET claimed_until = ?, attempts = attempts + 1"
                    " WHERE orderid = ?",
                    [(now + lease, r[0]) for r in rows],
                )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            return [Record.of(r) for r in rows]

    def expire_pending(self, age: float) -> list[str]:
        """pending records older than `age` s (their worker died in the charge) -> unknown."""
        now = time.time()
        with self._writing():
            db = self._db()
            db.execute("BEGIN IMMEDIATE")
            try:
                ids = [
                    r[0]
                    for r in db.execute(
                        "SELECT orderid FROM payments WHERE state = ? AND created < ?",
                        (PENDING, now - age),
                    )
                ]
                db.executemany(
                    "UPDATE payments SET state = ?, note = ?, updated = ? WHERE orderid = ?"
                    " AND state = ?",
                    [(UNKNOWN, "no outcome recorded: worker ended", now, i, PENDING) for i in ids],
                )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            return ids

    def purge(self, age: float) -> int:
        """Forget settled records (delivered, declined, failed) older than `age` s (the
        Idempotency-Key TTL), or than an hour for those without a key; pending, charged and
        unknown records are never purged."""
        now = time.time()
        with self._writing():
            db = self._db(durable=False)
            removed = 0
            for cutoff, keyless in (
                (now - age, ""),
                (now - KEYLESS_RETENTION, " AND idem_key IS NULL"),
            ):
                cur = db.execute(
                    f"DELETE FROM payments WHERE updated < ? AND state IN (?, ?, ?){keyless}",
                    (cutoff, DELIVERED, DECLINED, FAILED),
                )
                removed += cur.rowcount
            return removed

        # -- health, metrics, ops ----------------------------------------------------------

    def counts(self, states: tuple[str, ...] = OPEN) -> dict[str, int]:
        """Records per state (by default the open ones: cheap index ranges, while the settled
        states can hold a day of payments)."""
        db = self._db()
        sql = "SELECT count(*) FROM payments WHERE state = ?"
        return {state: int(db.execute(sql, (state,)).fetchone()[0]) for state in states}

    def undelivered(self) -> int:
        return int(
            self._db()
            .execute("SELECT count(*) FROM payments WHERE state = ?", (CHARGED,))
            .fetchone()[0]
        )

    def get(self, orderid: str) -> Record | None:
        row = (
            self._db()
            .execute(f"SELECT {COLUMNS} FROM payments WHERE orderid = ?", (orderid,))
            .fetchone()
        )
        return Record.of(row) if row else None

    def list(self, states: tuple[str, ...], limit: int = 1000) -> list[Record]:
        marks = ",".join("?" * len(states))
        rows = (
            self._db()
            .execute(
                f"SELECT {COLUMNS} FROM payments WHERE state IN ({marks}) ORDER BY created LIMIT ?",
                (*states, limit),
            )
            .fetchall()
        )
        return [Record.of(r) for r in rows]

    def requeue(self, orderid: str, note: str, hold: float = 0.0) -> bool:
        """ops: unknown -> charged (the operator checked the gateway), held `hold` s for ops'
        own publish (no drainer publishes it meanwhile); then the drainer's, if unconfirmed."""
        now = time.time()
        with self._writing():
            cur = self._db().execute(
                "UPDATE payments SET state = ?, note = ?, updated = ?, claimed_until = ?"
                " WHERE orderid = ? AND state = ?",
                (CHARGED, note, now, now + hold, orderid, UNKNOWN),
            )
            return cur.rowcount == 1

    def hold(self, orderid: str, seconds: float) -> bool:
        """ops: a `charged` record that no drainer holds now, held `seconds` for ops' own
        publish; False when it is not charged or a drainer is publishing it."""
        now = time.time()
        with self._writing():
            cur = self._db().execute(
                "UPDATE payments SET claimed_until = ? WHERE orderid = ? AND state = ?"
                " AND claimed_until <= ?",
                (now + seconds, orderid, CHARGED, now),
            )
            return cur.rowcount == 1

    def writable(self) -> bool:
        return os.access(self.path, os.W_OK) and os.access(os.path.dirname(self.path), os.W_OK)


def _lock_file(path: str) -> int | None:
    """The workers' write lock (flock needs no write access); None when it cannot be opened
    (e.g. created by another user): the writers then wait in SQLite's busy handler only."""
    try:
        return os.open(path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o640)
    except OSError:
        return None


def import_outbox(state_dir: str, records: Records) -> int:
    """Move the orders of the former outbox (outbox.sqlite3) in as charged records."""
    path = os.path.join(state_dir, "outbox.sqlite3")
    if not os.path.exists(path):
        return 0
    old = sqlitedb.connect(path, "FULL")
    try:
        try:
            rows = old.execute("SELECT orderid, body, request_id, created FROM outbox").fetchall()
        except sqlite3.OperationalError:
            return 0
        if rows:
            db = records._db()
            db.executemany(
                "INSERT OR IGNORE INTO payments (orderid, user, idem_key, fingerprint, state,"
                " body, request_id, created, updated, note) VALUES (?, '', NULL, '', ?, ?, ?,"
                " ?, ?, 'imported from outbox.sqlite3')",
                [(r[0], CHARGED, r[1], r[2], r[3], time.time()) for r in rows],
            )
            old.executemany("DELETE FROM outbox WHERE orderid = ?", [(r[0],) for r in rows])
        return len(rows)
    finally:
        old.close()
