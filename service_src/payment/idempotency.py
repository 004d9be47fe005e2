"""Idempotency-Key records: SQLite under the state dir (one host) or Redis (many hosts).

`begin(key, fingerprint)` atomically claims a key for one request:
- PROCEED: the caller owns the key (in flight) and must `finish` or `abort` it;
- REPLAY: a finished response with the same fingerprint exists (`Outcome.status/body`);
- MISMATCH: the key was used with another body (422);
- IN_FLIGHT: another request holds the key right now (409).
An in-flight claim older than the lease (a worker that died) may be taken over; finished
records are kept for the TTL.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from typing import Protocol

from . import sqlitedb

PROCEED = "proceed"
REPLAY = "replay"
MISMATCH = "mismatch"
IN_FLIGHT = "in_flight"


@dataclass(frozen=True)
class Outcome:
    kind: str
    status: int = 0
    body: str = ""


class Store(Protocol):
    def begin(self, key: str, fingerprint: str) -> Outcome: ...

    def finish(self, key: str, status: int, body: str) -> None: ...

    def abort(self, key: str) -> None: ...

    def ping(self) -> bool: ...


class SQLiteStore:
    SCHEMA = """
    CREATE TABLE IF NOT EXISTS idempotency (
        key TEXT PRIMARY KEY,
        fingerprint TEXT NOT NULL,
        state TEXT NOT NULL,
        status INTEGER NOT NULL DEFAULT 0,
        body TEXT NOT NULL DEFAULT '',
        expires REAL NOT NULL
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
                db.execute(
                    "INSERT OR REPLACE INTO idempotency (key, fingerprint, state, expires)"
                    " VALUES (?, ?, 'in_flight', ?)",
                    (key, fingerprint, now + self.lease),
                )
                outcome = Outcome(PROCEED)
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

    def finish(self, key: str, status: int, body: str) -> None:
        self._db().execute(
            "UPDATE idempotency SET state = 'done', status = ?, body = ?, expires = ?"
            " WHERE key = ?",
            (status, body, time.time() + self.ttl, key),
        )

    def abort(self, key: str) -> None:
        self._db().execute("DELETE FROM idempotency WHERE key = ? AND state = 'in_flight'", (key,))

    def ping(self) -> bool:
        try:
            self._db().execute("SELECT 1").fetchone()
            return True
        except sqlite3.Error:
            return False


class RedisStore:
    """The same records in Redis, shared by every payment host (keys `payment:idem:<key>`)."""

    # Delete the key only while it is still our in-flight claim.
    ABORT = """
    local v = redis.call('GET', KEYS[1])
    if v and cjson.decode(v)['state'] == 'in_flight' then return redis.call('DEL', KEYS[1]) end
    return 0
    """

    def __init__(self, url: str, ttl: int, lease: int) -> None:
        import redis  # only needed with this backend

        self.client = redis.Redis.from_url(
            url, socket_connect_timeout=2, socket_timeout=2, health_check_interval=30
        )
        self.ttl = ttl
        self.lease = lease
        self._abort = self.client.register_script(self.ABORT)

    @staticmethod
    def _key(key: str) -> str:
        return f"payment:idem:{key}"

    def begin(self, key: str, fingerprint: str) -> Outcome:
        k = self._key(key)
        claim = json.dumps({"fp": fingerprint, "state": "in_flight"})
        for _ in range(3):
            if self.client.set(k, claim, nx=True, ex=self.lease):
                return Outcome(PROCEED)
            raw = self.client.get(k)
            if raw is None:
                continue  # expired between SET and GET: try to claim again
            record = json.loads(raw)
            if record["fp"] != fingerprint:
                return Outcome(MISMATCH)
            if record["state"] == "in_flight":
                return Outcome(IN_FLIGHT)
            return Outcome(REPLAY, int(record["status"]), record["body"])
        return Outcome(IN_FLIGHT)

    def finish(self, key: str, status: int, body: str) -> None:
        # fingerprint kept from the claim
        k = self._key(key)
        raw = self.client.get(k)
        fp = json.loads(raw)["fp"] if raw else ""
        record = {"fp": fp, "state": "done", "status": status, "body": body}
        self.client.set(k, json.dumps(record), ex=self.ttl)

    def abort(self, key: str) -> None:
        self._abort(keys=[self._key(key)])

    def ping(self) -> bool:
        try:
            return bool(self.client.ping())
        except Exception:
            return False
