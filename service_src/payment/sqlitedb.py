"""SQLite databases shared by every uWSGI worker on the host (outbox, idempotency records)."""

from __future__ import annotations

import sqlite3
import time


def _busy(exc: sqlite3.OperationalError) -> bool:
    text = str(exc)
    return "locked" in text or "busy" in text


def connect(path: str, synchronous: str = "FULL", timeout: float = 10.0) -> sqlite3.Connection:
    """Open `path` in WAL mode, in autocommit (the callers run their own transactions).

    The workers start together and open the same new file together. Switching a database to
    WAL needs an exclusive lock, and SQLite answers SQLITE_BUSY at once, without waiting in
    its busy handler, when another connection holds a lock at that moment: the switch is
    retried here until `timeout`. Once the file is in WAL mode (it stays so), the switch is a
    read and other statements wait in the busy handler.
    """
    db = sqlite3.connect(path, timeout=timeout, isolation_level=None)
    db.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
    deadline = time.monotonic() + timeout
    while True:
        try:
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        except sqlite3.OperationalError as exc:
            if not _busy(exc) or time.monotonic() > deadline:
                db.close()
                raise
        else:
            if str(mode).lower() == "wal":
                break
            if time.monotonic() > deadline:
                db.close()
                raise sqlite3.OperationalError(f"{path}: journal_mode stays {mode!r}, not wal")
        time.sleep(0.02)
    db.execute(f"PRAGMA synchronous={synchronous}")
    return db
