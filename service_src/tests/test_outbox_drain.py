"""The outbox drainer, without a broker: what happens to a row after each publish outcome.

A drainer publish whose outcome is unknown (sent, then the connection died: UNCERTAIN; or no
confirm in time: ABANDONED) is published again, never dropped on the ledger's word. The
ledger (a stream) can hold a message the orders queue lost when the broker was killed in the
middle of writing it: dropping the row then loses a paid order (seen once, under load, when
these rows were checked against the ledger). Published again, the order can at worst be
queued twice, with the same message_id (= orderid) for consumers to recognise.
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


def test_unknown_outcome_is_published_again_not_dropped() -> None:
    for outcome in (UNCERTAIN, ABANDONED):
        h = Harness([outcome, CONFIRMED], seen={"order-1"})
        h.outbox.add("order-1", b"{}", "req-1", delay=0.0, uncertain=False)
        assert h.drainer.drain_once() == 0
        assert h.drainer.drain_once() == 1, f"{outcome}: not published again"
        assert h.published == ["order-1", "order-1"]
        assert h.asked == [] and h.duplicates == []
        assert h.outbox.pending() == 0


def test_failed_publish_is_retried() -> None:
    h = Harness([FAILED, CONFIRMED], seen=set())
    h.outbox.add("order-3", b"{}", "req-3", delay=0.0, uncertain=False)
    h.drainer.drain_once()
    assert h.drainer.drain_once() == 1
    assert h.published == ["order-3", "order-3"]
    assert h.outbox.pending() == 0
