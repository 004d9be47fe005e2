"""A paying client for rolling-deploy tests: keeps paying, alternating between payment hosts.

Test tool, standard library only (runs with any python3 >= 3.9, e.g. on the stubs host):

    python3 pay_client.py --target roll-payment1:8080 --target roll-payment2:8080 \
        --cart-url http://localhost:8080 --stop-file /tmp/pay_client.stop

Like a load balancer, it sends payment k to target k mod N and retries on the next target
*only* when the connection is refused (nothing was sent, so nothing can have been charged).
Anything else is a failed payment: a reset or timeout (the request may have been taken), an
HTTP status other than 200, a 200 without an orderid. Each payment uses a fresh connection.

It prints READY once the first payment has been tried, then pays until the stop file exists
(or --duration passes, or SIGTERM), and finally prints one JSON summary line:
{"attempts", "ok": [{"orderid", "target", "t", "retried"}], "failures": [...],
 "refused_retries", "by_target": {...}, "started", "stopped"}.
"""

from __future__ import annotations

import argparse
import errno
import json
import sys
import time
import urllib.error
import urllib.request
from typing import Any

from client_loop import Loop, options, run


def refused(exc: BaseException) -> bool:
    """True when the connection was refused (ECONNREFUSED), at any wrapping depth."""
    seen = 0
    while isinstance(exc, BaseException) and seen < 5:
        if isinstance(exc, ConnectionRefusedError):
            return True
        if isinstance(exc, OSError) and exc.errno == errno.ECONNREFUSED:
            return True
        exc = getattr(exc, "reason", None) or exc.__cause__ or exc.__context__
        seen += 1
    return False


class Client(Loop):
    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args)
        self.counter = 0
        self.ok: list[dict[str, Any]] = []
        self.failures: list[dict[str, Any]] = []
        self.refused_retries = 0
        self.by_target = {t: {"ok": 0, "refused": 0, "failed": 0} for t in self.targets}
        self.cart = self.fetch_cart(args.cart_url)

    def fetch_cart(self, base: str) -> dict[str, Any]:
        with urllib.request.urlopen(f"{base}/cart/anonymous-pay-client", timeout=10) as resp:
            return json.loads(resp.read())

    def post(self, target: str, user: str) -> tuple[int, bytes]:
        request = urllib.request.Request(
            f"http://{target}/pay/{user}",
            data=json.dumps(self.cart).encode(),
            method="POST",
            headers={"Content-Type": "application/json", "Connection": "close"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def pay_once(self, worker: int) -> None:
        with self.lock:
            k = self.counter
            self.counter += 1
        user = f"anonymous-roll-{worker}-{k}"
        first = k % len(self.targets)
        order = [self.targets[(first + i) % len(self.targets)] for i in range(len(self.targets))]
        retried = False
        for target in order:
            t = time.time()
            try:
                status, body = self.post(target, user)
            except Exception as exc:
                if refused(exc):
                    with self.lock:
                        self.by_target[target]["refused"] += 1
                        self.refused_retries += 1
                    retried = True
                    continue  # like a load balancer: the next target, nothing was sent
                self.fail(target, user, t, error=f"{type(exc).__name__}: {exc}")
                return
            if status != 200:
                self.fail(
                    target, user, t, status=status, body=body[:300].decode("utf-8", "replace")
                )
                return
            try:
                orderid = json.loads(body)["orderid"]
            except (ValueError, KeyError, TypeError):
                self.fail(
                    target, user, t, status=status, body=body[:300].decode("utf-8", "replace")
                )
                return
            with self.lock:
                self.ok.append({"orderid": orderid, "target": target, "t": t, "retried": retried})
                self.by_target[target]["ok"] += 1
            return
        self.fail(order[-1], user, time.time(), error="connection refused by every target")

    def fail(self, target: str, user: str, t: float, **detail: Any) -> None:
        with self.lock:
            self.failures.append({"target": target, "user": user, "t": t, **detail})
            self.by_target[target]["failed"] += 1

    def summary(self) -> dict[str, Any]:
        return {
            "attempts": self.counter,
            "ok": self.ok,
            "failures": self.failures,
            "refused_retries": self.refused_retries,
            "by_target": self.by_target,
        }


def main() -> int:
    parser = options(__doc__.splitlines()[0], pause=0.02)
    args = parser.parse_args()
    return run(Client(args), args.workers, ready_timeout=args.timeout + 5)


if __name__ == "__main__":
    sys.exit(main())
