"""Idempotency-Key records: SQLite under the state dir (one host) or Redis (many hosts,
`payment/redisstore.py`).

`begin(key, fingerprint)` atomically claims a key for one request:
- PROCEED: the caller owns the key (in flight, `Outcome.token` names the claim) and must
  `finish` or `abort` it;
- REPLAY: a finished response with the same fingerprint exists (`Outcome.status/body`);
- MISMATCH: the key was used with another body (422);
- IN_FLIGHT: another request holds the key right now (409);
- CHARGING: a request marked the key as charging (`Outcome.orderid`, `Outcome.age` seconds
  ago) and no answer was stored: 409 while the charge may still run, then 504 (Redis only).
An in-flight claim older than the lease (a worker that died) may be taken over; finished
records are kept for the TTL.

`charging(key, token, orderid)` is called just before the gateway call: True only while the
claim `token` is still the key's in-flight claim (a claim whose lease ran out and that another
request took over must not charge). `finish` and `abort` touch the key only while it is still
the caller's claim (or, for `finish`, when the key is gone).
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Protocol

from . import sqlitedb

PROCEED = "proceed"
REPLAY = "replay"
MISMATCH = "mismatch"
IN_FLIGHT = "in_flight"
CHARGING = "charging"


@dataclass(frozen=True)
class Outcome:
    kind: str
    status: int = 0
    body: str = ""
    token: str = ""  # PROCEED: the claim's token
    orderid: str = ""  # CHARGING: the order being charged
    age: float = 0.0  # CHARGING: seconds since the charge started
    host: str = ""  # CHARGING: the host that charges


def new_token() -> str:
    return uuid.uuid4().hex


class Store(Protocol):
    def begin(self, key: str, fingerprint: str) -> Outcome: ...

    def charging(self, key: str, token: str, orderid: str) -> bool: ...

    def finish(self, key: str, token: str, fingerprint: str, status: int, body: str) -> None: ...

    def abort(self, key: str, token: str) -> None: ...

    def ping(self) -> bool: ...


class SQLiteStore:
    """One host's keys. `charging` is a read (no write, no fsync): the host's payment records
    are in the same state dir, and a claim taken over after our ownership check finds our
    `pending` record, committed before that check, and answers from it (409/504/200)."""

    SCHEMA = """
    CREATE TABLE IF NOT EXISTS idempotency (
        key TEXT PRIMARY KEY,
        fingerprint TEXT NOT NULL,
        state TEXT NOT NULL,
        status INTEGER NOT NULL DEFAULT 0,
        body TEXT NOT NULL DEFAULT '',
        expires REAL NOT NULL,
        token TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX IF NOT EXISTS idempotency_expires ON idempotency (expires);
    """

    def __init__(self, state_dir: str, ttl: int, lease: int) -> None:
        os.makedirs(state_dir, mode=0o750, exist_ok=True)
        self.path = os.path.join(state_dir, "idempotency.sqlite3")
        self.ttl = ttl
        self.lease = lease
        self._local = threading.local()
        self._last_purge = 0.0
        db = self._db()
        db.executescript(self.SCHEMA)
        _add_token_column(db)

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlitedb.connect(self.path, "FULL")
            self._local.db = db
        return db

    def begin(self, key: str, fingerprint: str) -> Outcome:
        now = time.time()
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            row = db.execute(
                "SELECT fingerprint, state, status, body, expires FROM idempotency WHERE key = ?",
                (key,),
            ).fetchone()
            if row is None or row[4] < now:
                token = new_token()
                db.execute(
                    "INSERT OR REPLACE INTO idempotency (key, fingerprint, state, expires, token)"
                    " VALUES (?, ?, 'in_flight', ?, ?)",
                    (key, fingerprint, now + self.lease, token),
                )
                outcome = Outcome(PROCEED, token=token)
            elif row[0] != fingerprint:
                outcome = Outcome(MISMATCH)
            elif row[1] == "in_flight":
                outcome = Outcome(IN_FLIGHT)
            else:
                outcome = Outcome(REPLAY, int(row[2]), row[3])
            if now - self._last_purge > 60:
                self._last_purge = now
                db.execute("DELETE FROM idempotency WHERE expires < ?", (now,))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return outcome

    def charging(self, key: str, token: str, orderid: str) -> bool:
        row = (
            self._db()
            .execute(
                "SELECT 1 FROM idempotency WHERE key = ? AND token = ? AND state = 'in_flight'",
                (key, token),
            )
            .fetchone()
        )
        return row is not None

    def finish(self, key: str, token: str, fingerprint: str, status: int, body: str) -> None:
        # our claim, or no claim at all (ours expired and was dropped): never another's
        self._db().execute(
            "INSERT INTO idempotency (key, fingerprint, state, status, body, expires, token)"
            " VALUES (?, ?, 'done', ?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET"
            " state = 'done', status = excluded.status, body = excluded.body,"
            " expires = excluded.expires WHERE idempotency.token = excluded.token",
            (key, fingerprint, status, body, time.time() + self.ttl, token),
        )

    def abort(self, key: str, token: str) -> None:
        self._db().execute(
            "DELETE FROM idempotency WHERE key = ? AND token = ? AND state = 'in_flight'",
            (key, token),
        )

    def ping(self) -> bool:
        try:
            self._db().execute("SELECT 1").fetchone()
            return True
        except sqlite3.Error:
            return False


def _add_token_column(db: sqlite3.Connection) -> None:
    """A state dir from before claim tokens: add the column (old claims get '')."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(idempotency)")}
    if "token" in columns:
        return
    try:
        db.execute("ALTER TABLE idempotency ADD COLUMN token TEXT NOT NULL DEFAULT ''")
    except sqlite3.OperationalError as exc:  # another worker added it first
        if "duplicate column" not in str(exc):
            raise
