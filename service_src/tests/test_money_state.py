"""A hypothesis state machine over the in-process app: requests, retries with keys, gateway
and broker faults, failing state writes, expired key claims and drainer runs, interleaved.
After every step the money invariant holds (inproc.check); after a drain with the broker up,
every durable order is in the queue."""

from __future__ import annotations

import copy
import sqlite3
from typing import Any

from conftest import CART
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from inproc import World, check

USERS = st.sampled_from(["stan", "anonymous-1", "anonymous-2"])
KEYS = st.sampled_from([None, "k1", "k2", "k3"])


def variant(kind: str) -> Any:
    cart = copy.deepcopy(CART)
    if kind == "float":  # equal numbers, other spelling: the same request for a key
        cart["total"] = float(cart["total"])
        cart["items"][0]["price"] = float(cart["items"][0]["price"])
    elif kind == "other":  # another body: 422 for a used key
        cart["items"][0]["qty"] = 2
    elif kind == "invalid":
        cart["total"] = 0
    elif kind == "deep":
        value: Any = 1
        for _ in range(50):
            value = [value]
        cart["note"] = value
    return cart


class Payments(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.world = World()
        self.faults: set[str] = set()
        service = self.world.service
        charged, finish = service.records.charged, service.idempotency.finish

        def charged_or_fail(*args: Any) -> bool:
            if "charged" in self.faults:
                self.faults.discard("charged")
                raise sqlite3.OperationalError("disk I/O error")
            return charged(*args)

        def finish_or_fail(*args: Any) -> None:
            if "finish" in self.faults:
                self.faults.discard("finish")
                raise sqlite3.OperationalError("database is locked")
            finish(*args)

        service.records.charged = charged_or_fail  # type: ignore[method-assign]
        service.idempotency.finish = finish_or_fail  # type: ignore[method-assign]
        self.settled = True

    @rule(
        user=USERS,
        key=KEYS,
        kind=st.sampled_from(["same", "same", "float", "other", "invalid", "deep"]),
    )
    def pay(self, user: str, key: str | None, kind: str) -> None:
        reply = self.world.pay(user, key, variant(kind))
        assert reply.status != 500
        if reply.status == 200 and self.world.broker.mode != "up":
            self.settled = False
        if kind in ("invalid", "deep"):
            assert (
                reply.status in (400, 409, 422)
                or reply.body.get("status") == "error"
                or (reply.headers.get("Idempotent-Replayed") == "true")
            )

    @rule(mode=st.sampled_from(["ok", "ok", "decline", "refuse", "timeout", "server_error"]))
    def gateway(self, mode: str) -> None:
        self.world.deps.gateway.mode = mode

    @rule(mode=st.sampled_from(["up", "up", "down", "lose_confirm", "drop"]))
    def broker(self, mode: str) -> None:
        self.world.broker.mode = mode

    @rule(fault=st.sampled_from(["charged", "finish"]))
    def fail_next(self, fault: str) -> None:
        self.faults.add(fault)

    @rule()
    def claims_expire(self) -> None:
        """Every key claim's lease runs out (its worker died, or the TTL passed)."""
        self.world.service.idempotency._db().execute("UPDATE idempotency SET expires = 0")

    @rule()
    def drain(self) -> None:
        self.world.drain()
        if self.world.broker.mode == "up":
            check(self.world, settled=True)

    @invariant()
    def money_is_safe(self) -> None:
        check(self.world, settled=False)


Payments.TestCase.settings = settings(
    max_examples=150,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestPayments = Payments.TestCase
