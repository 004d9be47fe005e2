"""Where the Prometheus multiprocess files go; must run before prometheus_client is imported.

Each uWSGI master run gets its own subdirectory `<master pid>-<master start tick>` under
PROMETHEUS_MULTIPROC_DIR (default `$PAYMENT_STATE_DIR/metrics`), so counters of a previous
run or of a reused pid are never summed in; subdirectories of masters that are gone are
removed when a worker starts (the unit's RuntimeDirectory is wiped at stop anyway).
"""

from __future__ import annotations

import os
import shutil


def _master_pid() -> int:
    try:
        import uwsgi  # type: ignore[import-not-found]

        return int(uwsgi.masterpid()) or os.getpid()
    except ImportError:
        return os.getpid()


def _start_tick(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return "0"


def prepare(state_dir: str) -> str:
    # PAYMENT_METRICS_BASE: the configured directory, remembered in this process once the
    # per-run subdirectory has replaced PROMETHEUS_MULTIPROC_DIR.
    base = (
        os.environ.get("PAYMENT_METRICS_BASE")
        or os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        or os.path.join(state_dir, "metrics")
    )
    pid = _master_pid()
    name = f"{pid}-{_start_tick(pid)}"
    path = os.path.join(base, name)
    os.makedirs(path, mode=0o750, exist_ok=True)
    for entry in os.listdir(base):
        if entry == name:
            continue
        other_pid, _, tick = entry.partition("-")
        if other_pid.isdigit() and _start_tick(int(other_pid)) == tick:
            continue  # another live master (e.g. a test instance) owns it
        shutil.rmtree(os.path.join(base, entry), ignore_errors=True)
    os.environ["PAYMENT_METRICS_BASE"] = base
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    return path
