#!/usr/bin/env python3
"""Stub RoboShop Cart, User and payment-gateway services, for tests and the lab only.

Standard library only, Python 3.9+ (runs as a systemd unit with the system python3):

    python3 roboshop_stubs.py --role cart|user|gateway --port N [--bind 0.0.0.0]

Routes (see docs/interfaces.md):
- cart:    GET /cart/<id> -> a RoboShop cart with a SHIP item;
           DELETE /cart/<id> -> 200 "OK", then 404 "cart not found" once deleted.
- user:    GET /check/<id> -> 200 for registered users (ids not starting with "anonymous"),
           404 otherwise; POST /order/<id> -> 200 "OK".
- gateway: GET / (any path) -> 200.
- every role: GET /health -> 200; GET /_calls -> JSON list of the received calls (method, path,
  headers, body); DELETE /_calls clears it; POST /_mode with a JSON body sets a failure mode:
    {"mode": "ok"}                     normal answers
    {"mode": "fail", "status": 500}    answer every call with that status (default 500)
    {"mode": "hang"}                   never answer (until the mode changes)
    {"mode": "slow", "delay_ms": 300}  answer normally after a delay
    {"mode": "reset"}                  close the connection without an answer
    {"mode": "refuse", "seconds": 5}   stop listening (connection refused) for that long,
                                       then back to "ok"
  "path": "/check" limits a mode to calls whose path starts with it; "count": N limits it to
  the next N calls. The /_calls and /_mode routes are never affected (/health is).

An asyncio server with HTTP/1.1 keep-alive: cheap enough per call that it is not the
bottleneck of the payment service's benchmark.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import signal
import sys
from typing import Any

SAMPLE_CART = {
    "total": 1131.0,
    "tax": 188.5,
    "items": [
        {"qty": 1, "sku": "HAL-1", "name": "HAL", "price": 1000, "subtotal": 1000},
        {"qty": 1, "sku": "SHIP", "name": "shipping to Brno", "price": 131, "subtotal": 131},
    ],
}

REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    411: "Length Required",
    413: "Payload Too Large",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}
MAX_BODY = 4 * 1024 * 1024


class Stub:
    def __init__(self, role: str, bind: str, port: int, max_calls: int, record_bodies: bool):
        self.role = role
        self.bind = bind
        self.port = port
        self.calls: collections.deque = collections.deque(maxlen=max_calls)
        self.record_bodies = record_bodies
        self.mode: dict[str, Any] = {"mode": "ok"}
        self.deleted_carts: set[str] = set()
        self.server: asyncio.AbstractServer | None = None
        self.hang_waiters: set[asyncio.Future] = set()
        self.tasks: set[asyncio.Task] = set()
        self.writers: set[asyncio.StreamWriter] = set()

    # -- server lifecycle ------------------------------------------------------------
    async def start(self) -> None:
        self.server = await asyncio.start_server(
            self.handle, self.bind, self.port, reuse_address=True, backlog=1024
        )

    async def reopen_after(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        self.mode = {"mode": "ok"}
        await self.start()

    # -- HTTP ----------------------------------------------------------------------------
    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.add(writer)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                try:
                    method, target, version = lines[0].split(" ", 2)
                except ValueError:
                    await self.respond(writer, 400, "bad request line", close=True)
                    return
                headers: dict[str, str] = {}
                for line in lines[1:]:
                    if ":" in line:
                        name, value = line.split(":", 1)
                        headers[name.strip().lower()] = value.strip()
                if "chunked" in headers.get("transfer-encoding", "").lower():
                    await self.respond(writer, 411, "chunked bodies are not supported", True)
                    return
                try:
                    length = int(headers.get("content-length", "0") or 0)
                except ValueError:
                    length = -1
                if length < 0 or length > MAX_BODY:
                    await self.respond(writer, 413 if length > 0 else 400, "bad length", True)
                    return
                body = await reader.readexactly(length) if length else b""
                keep = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
                if not await self.dispatch(method, target, headers, body, writer):
                    return
                if not keep:
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            self.writers.discard(writer)
            writer.close()

    async def respond(
        self,
        writer: asyncio.StreamWriter,
        status: int,
        body: Any,
        close: bool = False,
        content_type: str | None = None,
    ) -> None:
        if isinstance(body, (dict, list)):
            data = json.dumps(body).encode()
            content_type = content_type or "application/json"
        else:
            data = str(body).encode()
            content_type = content_type or "text/plain; charset=utf-8"
        head = (
            f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}\r\n"
            f"Content-Type: {content_type}\r\nContent-Length: {len(data)}\r\n"
            + ("Connection: close\r\n" if close else "")
            + "\r\n"
        )
        writer.write(head.encode("latin-1") + data)
        await writer.drain()

    def mode_applies(self, path: str) -> bool:
        mode = self.mode
        if mode.get("mode", "ok") == "ok":
            return False
        if not path.startswith(mode.get("path", "")):
            return False
        if "count" in mode:
            if mode["count"] <= 0:
                self.mode = {"mode": "ok"}
                return False
            mode["count"] -= 1
        return True

    async def dispatch(
        self,
        method: str,
        target: str,
        headers: dict[str, str],
        body: bytes,
        writer: asyncio.StreamWriter,
    ) -> bool:
        """Answer one request; False when the connection must be dropped."""
        path = target.split("?", 1)[0]
        if path == "/_calls":
            if method == "GET":
                await self.respond(writer, 200, list(self.calls))
            elif method == "DELETE":
                self.calls.clear()
                await self.respond(writer, 200, "OK")
            else:
                await self.respond(writer, 405, "method not allowed")
            return True
        if path == "/_mode":
            return await self.set_mode(method, body, writer)

        if path != "/health":
            self.calls.append(
                {
                    "method": method,
                    "path": path,
                    "headers": headers,
                    "body": body.decode("utf-8", "replace") if self.record_bodies else "",
                }
            )
        if self.mode_applies(path):
            mode = dict(self.mode)
            kind = mode.get("mode")
            if kind == "fail":
                await self.respond(writer, int(mode.get("status", 500)), "stub failure")
                return True
            if kind == "hang":
                waiter = asyncio.get_running_loop().create_future()
                self.hang_waiters.add(waiter)
                try:
                    await asyncio.wait_for(waiter, timeout=float(mode.get("seconds", 600)))
                except asyncio.TimeoutError:
                    pass
                finally:
                    self.hang_waiters.discard(waiter)
                return False
            if kind == "reset":
                return False
            if kind == "slow":
                await asyncio.sleep(float(mode.get("delay_ms", 1000)) / 1000.0)
        if path == "/health" and method == "GET":
            await self.respond(writer, 200, {"app": "OK", "role": self.role})
            return True
        status, answer = self.route(method, path)
        await self.respond(writer, status, answer)
        return True

    async def set_mode(self, method: str, body: bytes, writer: asyncio.StreamWriter) -> bool:
        if method == "GET":
            await self.respond(writer, 200, self.mode)
            return True
        if method != "POST":
            await self.respond(writer, 405, "method not allowed")
            return True
        try:
            mode = json.loads(body or b"{}")
            if not isinstance(mode, dict) or mode.get("mode", "ok") not in (
                "ok",
                "fail",
                "hang",
                "slow",
                "reset",
                "refuse",
            ):
                raise ValueError("unknown mode")
        except ValueError as exc:
            await self.respond(writer, 400, {"error": str(exc)})
            return True
        self.mode = mode
        if mode.get("mode") == "refuse" and self.server is not None:
            self.server.close()
            self.server = None  # stops listening at once: new connections are refused
            for other in list(self.writers):  # and a dead service drops its connections
                if other is not writer:
                    other.close()
        for waiter in list(self.hang_waiters):
            if not waiter.done():
                waiter.set_result(None)
        await self.respond(writer, 200, mode)
        if mode.get("mode") == "refuse":
            task = asyncio.get_running_loop().create_task(
                self.reopen_after(float(mode.get("seconds", 5)))
            )
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
            return False
        return True

    def route(self, method: str, path: str) -> tuple[int, Any]:
        parts = [p for p in path.split("/") if p]
        if self.role == "gateway":
            return 200, "OK"
        if self.role == "cart" and len(parts) == 2 and parts[0] == "cart":
            cart_id = parts[1]
            if method == "GET":
                if cart_id in self.deleted_carts:
                    return 404, "cart not found"
                return 200, SAMPLE_CART
            if method == "DELETE":
                if cart_id in self.deleted_carts:
                    return 404, "cart not found"
                self.deleted_carts.add(cart_id)
                if len(self.deleted_carts) > 1_000_000:
                    self.deleted_carts.clear()
                return 200, "OK"
            return 405, "method not allowed"
        if self.role == "user" and len(parts) == 2 and parts[0] in ("check", "order"):
            user_id = parts[1]
            if parts[0] == "check" and method == "GET":
                if user_id.startswith("anonymous"):
                    return 404, "user not found"
                return 200, "OK"
            if parts[0] == "order" and method == "POST":
                return 200, "OK"
            return 405, "method not allowed"
        return 404, "not found"


async def serve(args: argparse.Namespace) -> None:
    stub = Stub(args.role, args.bind, args.port, args.max_calls, not args.no_bodies)
    await stub.start()
    print(f"stub {args.role} listening on {args.bind}:{args.port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


def main(argv: list | None = None) -> int:
    parser = argparse.ArgumentParser(description="RoboShop stub services (tests only)")
    parser.add_argument("--role", choices=("cart", "user", "gateway"), required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--bind", default="127.0.0.1")
    parser.add_argument("--max-calls", type=int, default=10000, help="calls kept for /_calls")
    parser.add_argument("--no-bodies", action="store_true", help="do not record call bodies")
    args = parser.parse_args(argv)
    asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
