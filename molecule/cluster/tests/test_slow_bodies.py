"""Slow request bodies through the load balancer: HAProxy passes a request on only once its
body has arrived (option http-buffer-request, within timeout http-request), so connections
that trickle their body never take a payment host's server slot or worker thread (uWSGI's
HTTP router streams a body to its worker as it comes: service_src/README.md, "Slow
clients"). Without the option, these connections fill every server slot (maxconn = the
hosts' worker threads) and a normal payment waits in HAProxy's queue."""

from __future__ import annotations

import json
import subprocess
import time
import uuid

import roboshop_testlib as lib
from conftest import LB

SLOW_BODIES = 48  # more than the two payment hosts' worker threads together (2 x 2 x 4)
SECONDS = 16  # the slow load's life: three timeout http-request periods (5 s)
BOUND = 5.0  # a normal payment's answer, seconds, while the slow load runs

LOAD = """
import json, sys, time
sys.path.insert(0, "/tmp")
from slowload import SlowLoad
with SlowLoad(8080, slowloris=0, idle=0, slowbody=int(sys.argv[1])) as load:
    time.sleep(2)
    print("READY " + json.dumps(load.open_count()), flush=True)
    time.sleep(float(sys.argv[2]))
    print(json.dumps({"open": load.open_count(), "closed": load.closed}), flush=True)
"""


def test_slow_bodies_do_not_delay_a_payment_through_the_load_balancer(stubs):
    subprocess.run(
        ["podman", "cp", str(lib.PROJECT / "testing/slowload.py"), f"{LB}:/tmp/slowload.py"],
        check=True,
    )
    load = subprocess.Popen(
        ["podman", "exec", LB, "python3", "-c", LOAD, str(SLOW_BODIES), str(SECONDS)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        ready = load.stdout.readline()
        assert ready.startswith("READY "), ready
        assert json.loads(ready[6:])["slowbody"] == SLOW_BODIES, ready
        answers = []
        deadline = time.monotonic() + SECONDS - 4
        while time.monotonic() < deadline:
            user = f"anonymous-{uuid.uuid4().hex[:12]}"
            cart = lib.fetch_cart(stubs, user)
            t0 = time.monotonic()
            code, text = lib.http(
                stubs, "POST", f"http://{LB}:{lib.PAYMENT_PORT}/pay/{user}", cart, timeout=30
            )
            answers.append((code, round(time.monotonic() - t0, 2), text[:200]))
            time.sleep(0.5)
        summary = json.loads(load.communicate(timeout=SECONDS + 30)[0].strip().splitlines()[-1])
    finally:
        if load.poll() is None:
            load.kill()
    print(f"\n{SLOW_BODIES} slow bodies through {LB}: payments {answers}; load {summary}")
    assert len(answers) >= 3, answers
    slow = [a for a in answers if a[0] != 200 or a[1] > BOUND]
    assert not slow, f"payments not answered 200 within {BOUND} s among slow bodies: {slow}"
    # HAProxy ended them (408 after timeout http-request) and the load opened them again.
    assert summary["closed"]["slowbody"] >= SLOW_BODIES, summary
