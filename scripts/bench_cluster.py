"""POST /pay through the load balancer with 1 and 2 payment hosts, side by side in one run,
and where the CPU goes: CPU per payment for each tier (load balancer, payment hosts, Redis,
RabbitMQ nodes, the stubs host with the paying client).

Runs against the hosts of molecule/cluster (scripts/bench-cluster.sh converges them first).
For each layout in turn (2 hosts, then 1 host: cl-payment2 set to MAINT in HAProxy, then 2
again), testing/tools/careful_client.py pays through cl-lb for --seconds with --workers
concurrent clients (a key per payment); each container's CPU is read from its cgroup
(cpuacct.usage) before and after. Numbers, not a pass/fail test.

    .venv/bin/python scripts/bench_cluster.py [--seconds 20] [--workers 8]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "testing/molecule_support"))
import roboshop_testlib as lib  # noqa: E402

LB = "cl-lb"
STUBS = "cl-stubs"
TIERS = {
    "load balancer": ["cl-lb"],
    "payment hosts": ["cl-payment1", "cl-payment2"],
    "redis": ["cl-redis"],
    "rabbitmq (3 nodes)": ["cl-rabbitmq1", "cl-rabbitmq2", "cl-rabbitmq3"],
    "stubs + client": ["cl-stubs"],
}
STOP_FILE = "/tmp/bench_cluster.stop"


def cpu_ns(container: str) -> int:
    """The container's CPU time so far (cgroup v1 cpuacct; v2 cpu.stat usage_usec)."""
    cid = subprocess.run(
        ["podman", "inspect", "-f", "{{.Id}}", container],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    v1 = Path(f"/sys/fs/cgroup/cpuacct/libpod_parent/libpod-{cid}/cpuacct.usage")
    if v1.exists():
        return int(v1.read_text())
    for stat in Path("/sys/fs/cgroup").glob(f"**/libpod-{cid}*/cpu.stat"):
        fields = dict(line.split() for line in stat.read_text().splitlines())
        return int(fields["usage_usec"]) * 1000
    raise RuntimeError(f"no CPU counter for {container}")


def haproxy(command: str) -> None:
    script = (
        "import socket,sys\n"
        "s=socket.socket(socket.AF_UNIX); s.connect('/run/haproxy/admin.sock')\n"
        "s.sendall(sys.argv[1].encode()+b'\\n'); print(s.recv(65536).decode())\n"
    )
    lib.host(LB).check_output("python3 -c %s %s", script, command)


def layout(hosts: int) -> None:
    verb = "enable" if hosts == 2 else "disable"
    for backend in ("payment", "payment_live"):
        haproxy(f"{verb} server {backend}/cl-payment2")
    want = {"cl-payment1": "UP", "cl-payment2": "UP" if hosts == 2 else "MAINT"}
    assert lib.wait_for(lambda: lib.haproxy_servers(LB) == want, timeout=30), lib.haproxy_servers(
        LB
    )


def run(hosts: int, seconds: float, workers: int) -> dict:
    layout(hosts)
    containers = [c for group in TIERS.values() for c in group]
    cart_port = lib.lab_vars()["roboshop_cart_port"]
    before = {c: cpu_ns(c) for c in containers}
    client = lib.start_client(
        STUBS, "careful_client.py", "--target", f"{LB}:{lib.PAYMENT_PORT}",
        "--cart-url", f"http://localhost:{cart_port}", "--stop-file", STOP_FILE,
        "--duration", str(seconds), "--workers", str(workers), "--pause", "0",
    )  # fmt: skip
    out, _ = client.communicate(timeout=seconds + 300)
    summary = json.loads(out.strip().splitlines()[-1])
    after = {c: cpu_ns(c) for c in containers}
    ok = summary["ok"]
    elapsed = summary["stopped"] - summary["started"]
    paid = max(len(ok), 1)
    return {
        "hosts": hosts,
        "payments": len(ok),
        "failed": len(summary["failures"]),
        "per_s": len(ok) / elapsed,
        "p50_ms": statistics.median(o["ms"] for o in ok) if ok else 0.0,
        "cpu_ms": {
            tier: sum(after[c] - before[c] for c in group) / 1e6 / paid
            for tier, group in TIERS.items()
        },
        "cpu_ms_per_payment_host": {
            c: (after[c] - before[c]) / 1e6 / paid for c in TIERS["payment hosts"]
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--workers", type=int, default=8)
    args = parser.parse_args()
    results = [run(hosts, args.seconds, args.workers) for hosts in (2, 1, 2)]
    layout(2)
    tiers = list(TIERS)
    print(
        f"\n{'hosts':>5} {'payments':>8} {'failed':>6} {'pay/s':>7} {'p50 ms':>7}  "
        + "  ".join(f"{t} CPU ms/pay" for t in tiers)
    )
    for r in results:
        print(
            f"{r['hosts']:>5} {r['payments']:>8} {r['failed']:>6} {r['per_s']:>7.1f} "
            f"{r['p50_ms']:>7.1f}  "
            + "  ".join(f"{r['cpu_ms'][t]:>{len(t) + 12}.2f}" for t in tiers)
        )
    one = results[1]
    two = statistics.mean(r["per_s"] for r in (results[0], results[2]))
    print(f"\npayments/s, 2 hosts / 1 host: {two / one['per_s']:.2f}")
    total = [sum(r["cpu_ms"].values()) for r in results]
    print(
        f"CPU ms per payment, all tiers: 2 hosts {total[0]:.2f}, 1 host {total[1]:.2f}, "
        f"2 hosts {total[2]:.2f}"
    )
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
