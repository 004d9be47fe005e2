"""The paying test client's loop (careful_client.py): the common
options, when to stop (a stop file, a duration, SIGTERM), the worker threads, READY once the
first payment has ended, and the one JSON summary line at the end. A worker that raises
fails the run (exit 1) instead of silently paying less.

Standard library only (python3 >= 3.9): it is copied next to the clients onto a test host.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import threading
import time
from typing import Any


def options(description: str, pause: float) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--target", action="append", required=True, help="host:port (repeat)")
    parser.add_argument("--cart-url", required=True, help="Cart service base URL (http://h:p)")
    parser.add_argument("--stop-file", help="stop when this file exists")
    parser.add_argument("--duration", type=float, default=0, help="stop after N seconds")
    parser.add_argument("--workers", type=int, default=2, help="concurrent paying clients")
    parser.add_argument("--pause", type=float, default=pause, help="seconds between payments")
    parser.add_argument("--timeout", type=float, default=30, help="per request, seconds")
    return parser


class Loop:
    """A client's stop condition and worker loop; subclasses pay (`pay_once`) and report
    (`summary`)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.targets: list[str] = args.target
        self.timeout: float = args.timeout
        self.pause: float = args.pause
        self.stop_file: str | None = args.stop_file
        if self.stop_file and os.path.exists(self.stop_file):
            os.unlink(self.stop_file)
        self.deadline = time.time() + args.duration if args.duration else None
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.first = threading.Event()
        self.crashed = threading.Event()

    def pay_once(self, worker: int) -> None:
        raise NotImplementedError

    def summary(self) -> dict[str, Any]:
        raise NotImplementedError

    def should_stop(self) -> bool:
        if self.stopping.is_set():
            return True
        asked = bool(self.stop_file) and os.path.exists(self.stop_file)
        if asked or (self.deadline is not None and time.time() >= self.deadline):
            self.stopping.set()
        return self.stopping.is_set()

    def worker(self, n: int) -> None:
        try:
            while not self.should_stop():
                self.pay_once(n)
                self.first.set()
                if self.pause:
                    time.sleep(self.pause)
        except BaseException:
            self.crashed.set()  # a bug here must fail the run, not hide payments
            self.first.set()
            raise


def run(client: Loop, workers: int, ready_timeout: float) -> int:
    """Pay with `workers` threads until told to stop; print READY, then the summary."""
    signal.signal(signal.SIGTERM, lambda *_: client.stopping.set())
    started = time.time()
    threads = [
        threading.Thread(target=client.worker, args=(n,), daemon=True) for n in range(workers)
    ]
    for thread in threads:
        thread.start()
    client.first.wait(timeout=ready_timeout)
    print("READY", flush=True)
    for thread in threads:
        thread.join()
    summary = {**client.summary(), "started": started, "stopped": time.time()}
    print(json.dumps(summary), flush=True)
    return 1 if client.crashed.is_set() else 0
