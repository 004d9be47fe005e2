"""roles/payment/library/payment_probe.py: when a unit runs with older files than are on disk.

A run that wrote the secrets file (or the unit, or switched the release) and then failed
before its restart leaves the service on the old files; the probe's restart_pending is how
the next run sees it (molecule/failures/tests/test_gate.py proves it on a host).
"""

from __future__ import annotations

import importlib.util
import os
import time
from pathlib import Path

PROBE = Path(__file__).resolve().parents[3] / "roles/payment/library/payment_probe.py"
_spec = importlib.util.spec_from_file_location("payment_probe", PROBE)
probe = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(probe)


def started(seconds_ago: float, state: str = "active", reload: str = "no") -> dict[str, str]:
    """systemctl show's properties for a unit that entered `state` seconds ago."""
    monotonic_us = int((time.monotonic() - seconds_ago) * 1e6)
    return {
        "ActiveState": state,
        "ActiveEnterTimestampMonotonic": str(monotonic_us),
        "NeedDaemonReload": reload,
    }


def written(path: Path, seconds_ago: float) -> str:
    path.write_text("x")
    at = time.time() - seconds_ago
    os.utime(path, (at, at))
    return str(path)


def test_a_file_changed_after_the_start_makes_a_restart_pending(tmp_path: Path):
    env = written(tmp_path / "payment.env", seconds_ago=5)
    unit = written(tmp_path / "payment.service", seconds_ago=600)
    props = {"payment.service": started(seconds_ago=60)}
    assert probe.restart_pending(props, {"payment.service": [unit, env]}) == ["payment.service"]


def test_files_older_than_the_start_need_nothing(tmp_path: Path):
    env = written(tmp_path / "payment.env", seconds_ago=120)
    props = {"payment.service": started(seconds_ago=60)}
    assert probe.restart_pending(props, {"payment.service": [env]}) == []


def test_a_switched_symlink_counts_by_its_own_time(tmp_path: Path):
    old = tmp_path / "release-old"
    old.mkdir()
    link = tmp_path / "current"
    link.symlink_to(old)  # switched just now; the release it points at is older
    os.utime(old, (time.time() - 900, time.time() - 900))
    props = {"payment.service": started(seconds_ago=60)}
    assert probe.restart_pending(props, {"payment.service": [str(link)]}) == ["payment.service"]


def test_a_unit_file_systemd_has_not_reloaded_makes_a_restart_pending(tmp_path: Path):
    unit = written(tmp_path / "payment.service", seconds_ago=600)
    props = {"payment.service": started(seconds_ago=60, reload="yes")}
    assert probe.restart_pending(props, {"payment.service": [unit]}) == ["payment.service"]


def test_a_unit_that_does_not_run_starts_on_the_files_as_they_are(tmp_path: Path):
    env = written(tmp_path / "payment.env", seconds_ago=5)
    for state in ("inactive", "failed", "activating"):
        props = {"payment.service": started(seconds_ago=60, state=state)}
        assert probe.restart_pending(props, {"payment.service": [env]}) == [], state


def test_missing_files_and_units_are_not_pending(tmp_path: Path):
    props = {"payment.socket": started(seconds_ago=60)}
    inputs = {"payment.socket": [str(tmp_path / "absent")], "payment.service": []}
    assert probe.restart_pending(props, inputs) == []
