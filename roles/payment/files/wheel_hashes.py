#!/usr/bin/env python3
"""Check a wheelhouse against requirements.lock; write the hashes the hosts install with.

Run by the payment role on the host that built the wheels, right after
`pip wheel --require-hashes -r requirements.lock` (tasks/wheelhouse.yml):

    python wheel_hashes.py requirements.lock WHEEL_DIR OUT

pip has already checked every file it downloaded (wheels and sdists) against the lock. A
wheel it *built* from a checked sdist (uWSGI compiles on the host) has a sha256 the lock
cannot know, so `pip install --require-hashes` of the shipped wheels would refuse it. OUT is
the lock with, for such a package only, the built wheel's sha256 added to the lock's hashes:
downloaded wheels are still held to the lock's own hashes, a built one to the hash recorded
on the builder. Every locked package must have exactly one wheel, and no wheel may be for a
package the lock does not list. Exit 1 (message on stderr) otherwise.
"""

from __future__ import annotations

import hashlib
import re
import sys
from pathlib import Path

ENTRY = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")
HASH = re.compile(r"--hash=sha256:([0-9a-f]{64})")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(text: str) -> dict[str, tuple[str, list[str]]]:
    """{canonical name: (version, [sha256, ...])} from a pip-compile --generate-hashes file."""
    joined = re.sub(r"\\\n", " ", text)
    locked: dict[str, tuple[str, list[str]]] = {}
    for line in joined.splitlines():
        line = line.split(" #", 1)[0].strip()
        match = ENTRY.match(line)
        if match:
            locked[canonical(match.group(1))] = (match.group(2), HASH.findall(line))
    return locked


def wheel_name(path: Path) -> tuple[str, str]:
    name, version = path.name.split("-")[:2]
    return canonical(name), version


def merge(lock_text: str, wheel_dir: Path) -> tuple[str, list[str]]:
    """The hashes file's text and the names of the packages whose wheel was built here."""
    locked = read_lock(lock_text)
    wheels: dict[str, Path] = {}
    for wheel in sorted(wheel_dir.glob("*.whl")):
        name, version = wheel_name(wheel)
        if name not in locked:
            raise ValueError(f"{wheel.name}: {name} is not in the lock")
        if version != locked[name][0]:
            raise ValueError(f"{wheel.name}: the lock pins {name}=={locked[name][0]}")
        if name in wheels:
            raise ValueError(f"two wheels for {name}: {wheels[name].name}, {wheel.name}")
        wheels[name] = wheel
    missing = sorted(set(locked) - set(wheels))
    if missing:
        raise ValueError(f"no wheel for {', '.join(missing)}")
    lines, built = [], []
    for name, (version, hashes) in sorted(locked.items()):
        digest = hashlib.sha256(wheels[name].read_bytes()).hexdigest()
        if digest not in hashes:  # built here from the sdist pip checked against the lock
            hashes = [*hashes, digest]
            built.append(name)
        lines.append(f"{name}=={version} " + " ".join(f"--hash=sha256:{h}" for h in hashes))
    header = (
        "# requirements.lock's hashes, plus the sha256 of each wheel built on the wheelhouse"
        f" host: {', '.join(built) or 'none'}\n"
    )
    return header + "\n".join(lines) + "\n", built


def main(argv: list[str]) -> int:
    if len(argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    lock, wheel_dir, out = Path(argv[1]), Path(argv[2]), Path(argv[3])
    try:
        text, built = merge(lock.read_text(), wheel_dir)
    except ValueError as exc:
        print(f"wheelhouse {wheel_dir} does not match {lock}: {exc}", file=sys.stderr)
        return 1
    out.write_text(text)
    print(f"built here: {', '.join(built) or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
