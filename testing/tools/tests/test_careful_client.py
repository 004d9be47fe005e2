"""careful_client.py against a scripted fake payment service: what it retries (with the
same key), what it counts as final, and what it reports. The cluster scenario's verdicts
rest on these counts."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

CLIENT = Path(__file__).resolve().parents[1] / "careful_client.py"


class Fake(BaseHTTPRequestHandler):
    """Answers attempt n of a key with script[n] (then the last entry again)."""

    script: ClassVar[list[tuple[int, dict, dict]]] = []
    seen: ClassVar[dict[str, list[str]]] = {}

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # the cart
        self.answer(200, {"total": 1, "items": []}, {})

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        key = self.headers["Idempotency-Key"]
        attempts = Fake.seen.setdefault(key, [])
        attempts.append(self.headers["X-Request-ID"])
        status, body, headers = Fake.script[min(len(attempts), len(Fake.script)) - 1]
        self.answer(status, body, headers)

    def answer(self, status: int, body: dict, headers: dict) -> None:
        raw = json.dumps(body).encode()
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)


@pytest.fixture
def fake() -> Iterator[str]:
    Fake.seen = {}
    server = ThreadingHTTPServer(("127.0.0.1", 0), Fake)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def run(target: str) -> dict:
    out = subprocess.run(
        [sys.executable, str(CLIENT), "--target", target, "--cart-url", f"http://{target}",
         "--duration", "0.3", "--workers", "1", "--pause", "0.01", "--give-up", "5"],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    lines = out.stdout.splitlines()
    assert lines[0] == "READY"
    return json.loads(lines[-1])


def test_retries_with_the_same_key_until_the_final_answer(fake: str) -> None:
    Fake.script = [
        (503, {"status": "error", "message": "user service unavailable"}, {}),
        (409, {"status": "error", "message": "in progress"}, {"Retry-After": "0"}),
        (502, {"message": "haproxy: bad gateway"}, {}),
        (200, {"orderid": "o-1"}, {"Idempotent-Replayed": "true"}),
    ]
    summary = run(fake)
    assert summary["payments"] >= 1 and summary["failures"] == []
    assert len(summary["ok"]) == summary["payments"]
    first = summary["ok"][0]
    assert first["attempts"] == 4 and first["replayed"] is True and first["ms"] > 0
    # every attempt of a payment carries its key, and the request id KEY.n
    rids = Fake.seen[first["key"]]
    assert rids == [f"{first['key']}.{n}" for n in range(1, 5)]
    assert summary["statuses"]["200"] == summary["payments"]
    assert summary["retried_payments"] == summary["payments"]


def test_unknown_charge_state_is_final_and_a_failure(fake: str) -> None:
    Fake.script = [
        (504, {"status": "error", "message": "the charge state is unknown"}, {}),
        (200, {"orderid": "never"}, {}),
    ]
    summary = run(fake)
    assert summary["ok"] == []
    assert summary["failures"] and all(f["status"] == 504 for f in summary["failures"])
    assert all(len(rids) == 1 for rids in Fake.seen.values())  # never retried


def test_a_refused_payment_is_retried_with_its_key_until_it_gives_up(fake: str) -> None:
    port = fake.split(":")[1]
    out = subprocess.run(
        [sys.executable, str(CLIENT), "--target", "127.0.0.1:9", "--cart-url",
         f"http://127.0.0.1:{port}", "--duration", "0.1", "--workers", "1", "--pause", "0.2",
         "--give-up", "1"],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    summary = json.loads(out.stdout.splitlines()[-1])
    assert summary["ok"] == [] and len(summary["failures"]) == summary["payments"] >= 1
    failure = summary["failures"][0]
    assert failure["attempts"] > 1 and "no final answer" in failure["error"]
    assert summary["statuses"].get("ConnectionRefusedError", 0) >= failure["attempts"]
