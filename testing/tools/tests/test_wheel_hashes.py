"""roles/payment/files/wheel_hashes.py: what the wheelhouse may ship, checked against the lock.

A downloaded wheel must match the lock's hashes; a wheel built on the wheelhouse host from
the (pip-checked) sdist gets its own sha256 recorded; anything else is refused.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "roles/payment/files"))
from wheel_hashes import merge, read_lock

PIKA = b"pika wheel bytes"
SDIST = hashlib.sha256(b"uwsgi sdist bytes").hexdigest()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


LOCK = f"""# requirements.txt sha256: 00
#
pika==1.4.4 \\
    --hash=sha256:{sha(b"other pika file")} \\
    --hash=sha256:{sha(PIKA)}
    # via -r requirements.txt
uwsgi==2.0.31 \\
    --hash=sha256:{SDIST}
    # via -r requirements.txt
"""


@pytest.fixture()
def wheels(tmp_path: Path) -> Path:
    (tmp_path / "pika-1.4.4-py3-none-any.whl").write_bytes(PIKA)
    (tmp_path / "uWSGI-2.0.31-cp311-cp311-linux_x86_64.whl").write_bytes(b"built here")
    return tmp_path


def test_read_lock_joins_continuations():
    locked = read_lock(LOCK)
    assert locked["pika"] == ("1.4.4", [sha(b"other pika file"), sha(PIKA)])
    assert locked["uwsgi"] == ("2.0.31", [SDIST])


def test_built_wheel_hash_recorded_downloaded_wheels_keep_lock_hashes(wheels: Path):
    text, built = merge(LOCK, wheels)
    assert built == ["uwsgi"]
    lines = dict(line.split(" ", 1) for line in text.splitlines() if not line.startswith("#"))
    assert lines["pika==1.4.4"] == (
        f"--hash=sha256:{sha(b'other pika file')} --hash=sha256:{sha(PIKA)}"
    )
    assert lines["uwsgi==2.0.31"] == f"--hash=sha256:{SDIST} --hash=sha256:{sha(b'built here')}"


@pytest.mark.parametrize(
    ("name", "error"),
    [
        ("requests-2.34.2-py3-none-any.whl", "requests is not in the lock"),
        ("pika-1.4.5-py3-none-any.whl", "the lock pins pika==1.4.4"),
    ],
)
def test_wheels_the_lock_does_not_allow_are_refused(wheels: Path, name: str, error: str):
    (wheels / name).write_bytes(b"x")
    with pytest.raises(ValueError, match=error):
        merge(LOCK, wheels)


def test_a_locked_package_without_wheel_is_refused(wheels: Path):
    (wheels / "pika-1.4.4-py3-none-any.whl").unlink()
    with pytest.raises(ValueError, match="no wheel for pika"):
        merge(LOCK, wheels)
