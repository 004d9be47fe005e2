"""The outbox drainer, without a broker: what happens to a row after each publish outcome.

A drainer publish that was sent when the connection died (UNCERTAIN), or whose confirm did
not come in time (ABANDONED after sending), may be queued already. Such a row must be checked
against the ledger before it is published again; before this was fixed it was published
again blindly, which a broker killed during a drain turned into a duplicate order.
"""

from __future__ import annotations

import tempfile

from payment.amqp import ABANDONED, CONFIRMED, FAILED, UNCERTAIN, Ticket
from payment.outbox import Drainer, Outbox, Row


class Harness:
    def __init__(self, outcomes: list[str], seen: set[str]) -> None:
        self.outbox = Outbox(tempfile.mkdtemp(prefix="payment-drain-"), synchronous="OFF")
        self.outcomes = list(outcomes)
        self.seen = seen
        self.published: list[str] = []
        self.asked: list[set[str]] = []
        self.duplicates: list[str] = []
        self.drainer = Drainer(
            self.outbox,
            submit=self.submit,
            connected=lambda: True,
            poll=0.0,
            lease=30.0,
            confirm_timeout=0.01,
            late_window=0.0,
            ledger=self.ledger,
            on_duplicate=lambda row: self.duplicates.append(row.orderid),
        )

    def submit(self, row: Row) -> Ticket:
        self.published.append(row.orderid)
        ticket = Ticket(row.orderid)
        ticket.mark_sent()
        outcome = self.outcomes.pop(0)
        if outcome != ABANDONED:  # ABANDONED: no answer before the waiter's timeout
            ticket.resolve(outcome)
        return ticket

    def ledger(self, since: float, wanted: set[str]) -> set[str]:
        self.asked.append(set(wanted))
        return wanted & self.seen


def test_uncertain_drain_publish_is_checked_before_it_is_sent_again() -> None:
    h = Harness([UNCERTAIN], seen={"order-1"})
    h.outbox.add("order-1", b"{}", "req-1", delay=0.0, uncertain=False)
    assert h.drainer.drain_once() == 0
    h.drainer.drain_once()
    assert h.published == ["order-1"], "published again without asking the ledger"
    assert h.asked == [{"order-1"}]
    assert h.duplicates == ["order-1"]
    assert h.outbox.pending() == 0


def test_abandoned_drain_publish_is_checked_too() -> None:
    h = Harness([ABANDONED, CONFIRMED], seen=set())
    h.outbox.add("order-2", b"{}", "req-2", delay=0.0, uncertain=False)
    h.drainer.drain_once()
    assert h.drainer.drain_once() == 1  # the ledger did not see it: published again
    assert h.asked == [{"order-2"}]
    assert h.published == ["order-2", "order-2"]
    assert h.outbox.pending() == 0


def test_failed_publish_is_retried_without_the_ledger() -> None:
    h = Harness([FAILED, CONFIRMED], seen=set())
    h.outbox.add("order-3", b"{}", "req-3", delay=0.0, uncertain=False)
    h.drainer.drain_once()
    assert h.drainer.drain_once() == 1
    assert h.asked == []  # certainly not queued: no question to ask
    assert h.published == ["order-3", "order-3"]
