"""Workers starting together open the same new state databases together: none may fail.

uWSGI starts its workers at once; each opens the payment records and the idempotency database.
Before payment.sqlitedb, the switch to WAL sometimes answered "database is locked" at once in one
of them (about 1 round in 6 here), and uWSGI, unable to load the app, stopped the whole instance.
"""

from __future__ import annotations

import multiprocessing as mp
import tempfile
from multiprocessing.connection import Connection

from payment.idempotency import SQLiteStore
from payment.records import Records

WORKERS = 4
ROUNDS = 30


def _open_all(state_dir: str, barrier: mp.synchronize.Barrier, out: Connection) -> None:
    barrier.wait()
    try:
        Records(state_dir)
        SQLiteStore(state_dir, ttl=60, lease=30)
        out.send("")
    except Exception as exc:  # reported to the test, which fails with it
        out.send(repr(exc))


def test_workers_open_new_databases_together() -> None:
    ctx = mp.get_context("fork")
    errors = []
    for _ in range(ROUNDS):
        state_dir = tempfile.mkdtemp(prefix="payment-sqlite-")
        barrier = ctx.Barrier(WORKERS)
        pipes = [ctx.Pipe(duplex=False) for _ in range(WORKERS)]
        procs = [
            ctx.Process(target=_open_all, args=(state_dir, barrier, send)) for _, send in pipes
        ]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join(30)
        results = [recv.recv() if recv.poll(1) else "no answer" for recv, _ in pipes]
        errors += [r for r in results if r]
    assert errors == [], f"{len(errors)} of {WORKERS * ROUNDS} opens failed: {errors[:3]}"
