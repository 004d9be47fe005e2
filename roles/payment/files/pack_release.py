#!/usr/bin/env python3
"""Pack the payment service source into a deterministic, content-addressed tarball.

Run on the Ansible controller by the payment role (tasks/pack.yml). The release id is the
first 12 hex digits of a SHA-256 over every packed file's relative path, executable bit and
content, so it changes only when the source does. The tarball is reproducible: members
sorted, fixed mtime/owner/mode, gzip header without name or time. Excluded: tests/,
__pycache__/, *.pyc/*.pyo and every dotfile or dot-directory (.env, .git, .pytest_cache...).

Prints one JSON object: {"id", "path", "created", "files"}. Exit 2 on a bad source tree.
"""

import argparse
import gzip
import hashlib
import json
import os
import sys
import tarfile
import tempfile

EXCLUDED_DIRS = {"tests", "__pycache__", "venv", "node_modules"}
EXCLUDED_SUFFIXES = (".pyc", ".pyo", ".swp")
REQUIRED_FILES = ("requirements.txt", "payment.ini")
FIXED_MTIME = 315532800  # 1980-01-01, as in reproducible zip/wheel builds


def source_files(src):
    found = []
    for root, dirs, files in os.walk(src):
        dirs[:] = sorted(d for d in dirs if d not in EXCLUDED_DIRS and not d.startswith("."))
        for name in sorted(files):
            if name.startswith(".") or name.endswith(EXCLUDED_SUFFIXES):
                continue
            path = os.path.join(root, name)
            if os.path.islink(path) or not os.path.isfile(path):
                continue
            found.append(os.path.relpath(path, src))
    return sorted(found)


def release_id(src, files):
    digest = hashlib.sha256()
    for rel in files:
        path = os.path.join(src, rel)
        executable = os.stat(path).st_mode & 0o111 != 0
        digest.update(rel.encode() + b"\0" + (b"x" if executable else b"-") + b"\0")
        with open(path, "rb") as handle:
            digest.update(hashlib.sha256(handle.read()).digest())
    return digest.hexdigest()[:12]


def normalize(info, executable):
    info.mtime = FIXED_MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    if info.isdir():
        info.mode = 0o755
    else:
        info.mode = 0o755 if executable else 0o644
    return info


def write_tarball(src, files, target):
    directories = sorted({os.path.dirname(rel) for rel in files} - {""})
    # every parent directory too, so extraction never depends on implicit creation
    parents = set()
    for directory in directories:
        parts = directory.split(os.sep)
        for i in range(1, len(parts) + 1):
            parents.add(os.sep.join(parts[:i]))
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(target), prefix=".pack-")
    try:
        with (
            os.fdopen(fd, "wb") as raw,
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz,
            tarfile.open(fileobj=gz, mode="w", format=tarfile.GNU_FORMAT) as tar,
        ):
            for directory in sorted(parents):
                info = tarfile.TarInfo(directory)
                info.type = tarfile.DIRTYPE
                tar.addfile(normalize(info, True))
            for rel in files:
                path = os.path.join(src, rel)
                executable = os.stat(path).st_mode & 0o111 != 0
                info = tar.gettarinfo(path, arcname=rel)
                with open(path, "rb") as handle:
                    tar.addfile(normalize(info, executable), handle)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        os.unlink(tmp)
        raise


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", required=True, help="service source directory")
    parser.add_argument("--cache-dir", required=True, help="where tarballs are kept")
    args = parser.parse_args()

    src = os.path.realpath(args.src)
    if not os.path.isdir(src):
        print(json.dumps({"error": f"payment_source_dir {src} is not a directory"}))
        return 2
    missing = [f for f in REQUIRED_FILES if not os.path.isfile(os.path.join(src, f))]
    if missing:
        print(json.dumps({"error": f"payment_source_dir {src} lacks {', '.join(missing)}"}))
        return 2

    files = source_files(src)
    rid = release_id(src, files)
    os.makedirs(args.cache_dir, exist_ok=True)
    target = os.path.join(os.path.realpath(args.cache_dir), f"payment-{rid}.tar.gz")
    created = not os.path.isfile(target)
    if created:
        write_tarball(src, files, target)
    print(json.dumps({"id": rid, "path": target, "created": created, "files": len(files)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
