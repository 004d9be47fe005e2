"""A careful paying client: every payment has its own Idempotency-Key, and is retried with
that key until it has a final answer, as a client of a payment API should.

Test tool, standard library only (runs with any python3 >= 3.9, e.g. on the stubs host):

    python3 careful_client.py --target cl-lb:8080 --cart-url http://localhost:8080 \
        --stop-file /tmp/careful_client.stop

One payment = one fresh anonymous cart, one key, and attempts until a final answer:
- 200 with an orderid: paid (final).
- 409 (the key is in flight elsewhere): wait Retry-After, try again with the key.
- a connection refused/reset, a timeout, or a 502/503/504 that is not the service's final
  "charge state unknown": try again with the key after a short pause (the key makes a
  retry safe: the service answers it from its records, never charging twice).
- the service's 504 "charge state unknown", any other status, or no final answer within
  --give-up seconds: a failed payment.
Attempt n of key K sends `X-Request-ID: K.n`; the service passes the request id on to the
payment gateway, so the gateway's calls can be counted per key (charges per key). With
several --target, attempts rotate over them (a retry goes to the next target).

It prints READY once the first payment has ended, pays until the stop file exists (or
--duration passes, or SIGTERM), finishes the payments under way, and prints one JSON line:
{"payments", "attempts", "ok": [{"orderid", "key", "target", "t", "attempts", "ms", "replayed"}],
 "failures": [...], "retried_payments", "statuses": {...}, "started", "stopped"}.
"""

from __future__ import annotations

import argparse
import collections
import http.client
import json
import sys
import time
import uuid
from typing import Any

from client_loop import Loop, options, run

UNKNOWN = "charge state is unknown"


class Client(Loop):
    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args)
        self.give_up: float = args.give_up
        self.cart_url: str = args.cart_url
        self.run = uuid.uuid4().hex[:8]
        self.payments = 0
        self.attempts = 0
        self.ok: list[dict[str, Any]] = []
        self.failures: list[dict[str, Any]] = []
        self.retried = 0
        self.statuses: collections.Counter[str] = collections.Counter()

    def cart(self, user: str) -> bytes:
        host, _, port = self.cart_url.removeprefix("http://").partition(":")
        conn = http.client.HTTPConnection(host, int(port or 80), timeout=10)
        try:
            conn.request("GET", f"/cart/{user}")
            resp = conn.getresponse()
            body = resp.read()
            if resp.status != 200:
                raise RuntimeError(f"cart {user}: HTTP {resp.status}")
            return body
        finally:
            conn.close()

    def post(self, target: str, user: str, cart: bytes, key: str, rid: str) -> tuple:
        host, _, port = target.partition(":")
        conn = http.client.HTTPConnection(host, int(port or 80), timeout=self.timeout)
        try:
            conn.request(
                "POST",
                f"/pay/{user}",
                body=cart,
                headers={
                    "Content-Type": "application/json",
                    "Idempotency-Key": key,
                    "X-Request-ID": rid,
                    "Connection": "close",
                },
            )
            resp = conn.getresponse()
            return resp.status, resp.read(), dict(resp.getheaders())
        finally:
            conn.close()

    def pay_once(self, worker: int) -> None:
        with self.lock:
            k = self.payments
            self.payments += 1
        user = f"anonymous-careful-{self.run}-{worker}-{k}"  # a cart is gone once paid
        key = uuid.uuid4().hex
        started = time.time()
        try:
            cart = self.cart(user)
        except (OSError, http.client.HTTPException, RuntimeError) as exc:
            self.fail(key, user, started, 0, error=f"cart: {type(exc).__name__}: {exc}")
            return
        n = 0
        while True:
            n += 1
            target = self.targets[(k + n - 1) % len(self.targets)]
            t = time.time()
            wait = self.pause or 0.2
            try:
                status, body, headers = self.post(target, user, cart, key, f"{key}.{n}")
            except (OSError, http.client.HTTPException) as exc:
                outcome = type(exc).__name__
            else:
                outcome = str(status)
                if status == 200:
                    try:
                        orderid = json.loads(body)["orderid"]
                    except (ValueError, KeyError, TypeError):
                        self.fail(key, user, t, n, status=status, body=body[:300].decode())
                        return
                    self.count(outcome, n)
                    with self.lock:
                        self.ok.append(
                            {
                                "orderid": orderid,
                                "key": key,
                                "target": target,
                                "t": started,
                                "attempts": n,
                                "ms": round((time.time() - started) * 1000, 2),
                                "replayed": headers.get("Idempotent-Replayed") == "true",
                            }
                        )
                    return
                text = body[:300].decode("utf-8", "replace")
                if status == 409:
                    wait = float(headers.get("Retry-After", "1"))
                elif status not in (502, 503, 504) or UNKNOWN in text:
                    self.count(outcome, n)
                    self.fail(key, user, t, n, status=status, body=text)
                    return
            self.count(outcome, 0)
            if time.time() - started + wait > self.give_up:
                self.fail(key, user, t, n, error=f"no final answer, last {outcome}")
                return
            time.sleep(wait)

    def count(self, outcome: str, attempts: int) -> None:
        with self.lock:
            self.statuses[outcome] += 1
            self.attempts += 1
            if attempts > 1:
                self.retried += 1

    def fail(self, key: str, user: str, t: float, attempts: int, **detail: Any) -> None:
        with self.lock:
            self.failures.append({"key": key, "user": user, "t": t, "attempts": attempts, **detail})

    def summary(self) -> dict[str, Any]:
        return {
            "payments": self.payments,
            "attempts": self.attempts,
            "ok": self.ok,
            "failures": self.failures,
            "retried_payments": self.retried,
            "statuses": dict(self.statuses),
        }


def main() -> int:
    parser = options(__doc__.splitlines()[0], pause=0.05)
    parser.add_argument("--give-up", type=float, default=120, help="per payment, seconds")
    args = parser.parse_args()
    return run(Client(args), args.workers, ready_timeout=args.give_up + 5)


if __name__ == "__main__":
    sys.exit(main())
