"""Locked dependencies: the release's venv is exactly service_src/requirements.lock, installed
with hashes checked, and the shipped wheels are held to those hashes (the built uWSGI wheel
to the hash recorded where it was built)."""

from __future__ import annotations

import json
import re

from conftest import PROJECT
from wheel_hashes import read_lock

LOCK = PROJECT / "service_src/requirements.lock"
WHEELS = "/var/cache/roboshop-payment/wheels"
VENV = "/app/current/venv"


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _hashes_file(payment) -> tuple[str, str]:
    """(wheel directory, its requirements.hashes) of the lock the live release carries."""
    found = payment.check_output("ls -d %s/*/requirements.hashes", WHEELS).split()
    assert len(found) == 1, found
    return found[0].rsplit("/", 1)[0], payment.file(found[0]).content_string


def test_release_venv_is_exactly_the_lock(payment):
    assert payment.file("/app/current/requirements.lock").content_string == LOCK.read_text()
    installed = json.loads(
        payment.check_output(
            "%s/bin/python -m pip list --format json --disable-pip-version-check", VENV
        )
    )
    have = {canonical(d["name"]): d["version"] for d in installed}
    for tool in ("pip", "setuptools"):
        have.pop(tool, None)
    want = {name: version for name, (version, _) in read_lock(LOCK.read_text()).items()}
    assert have == want


def test_shipped_hashes_are_the_lock_plus_the_built_uwsgi_wheel(payment):
    wheel_dir, text = _hashes_file(payment)
    shipped = read_lock(text)
    locked = read_lock(LOCK.read_text())
    assert set(shipped) == set(locked)
    for name, (version, hashes) in locked.items():
        if name != "uwsgi":
            assert shipped[name] == (version, hashes), name
    uwsgi_wheel = payment.check_output(
        "ls %s/uWSGI-*.whl %s/uwsgi-*.whl 2>/dev/null; true", wheel_dir, wheel_dir
    ).split()
    assert len(uwsgi_wheel) == 1, uwsgi_wheel
    built = payment.check_output("sha256sum %s", uwsgi_wheel[0]).split()[0]
    assert built not in locked["uwsgi"][1]  # compiled on the host: not PyPI's sdist
    assert shipped["uwsgi"] == (locked["uwsgi"][0], [*locked["uwsgi"][1], built])


def test_a_tampered_wheel_is_refused(payment):
    wheel_dir, _ = _hashes_file(payment)
    tmp = payment.check_output("mktemp -d")
    try:
        payment.check_output("cp -a %s %s/wheels && python3 -m venv %s/venv", wheel_dir, tmp, tmp)
        pika = payment.check_output("ls %s/wheels/pika-*.whl", tmp)
        payment.check_output("printf x >> %s", pika)
        install = payment.run(
            "%s/venv/bin/python -m pip install --disable-pip-version-check --no-index"
            " --require-hashes --find-links %s/wheels -r %s/wheels/requirements.hashes",
            tmp, tmp, tmp,
        )  # fmt: skip
        assert install.rc != 0
        assert "DO NOT MATCH THE HASHES" in install.stderr + install.stdout
    finally:
        payment.run("rm -rf %s", tmp)
