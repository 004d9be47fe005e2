#!/usr/bin/python
"""Read-only: what the payment role needs to know about a host, in one round trip."""

import glob
import grp
import os
import pwd
import time

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: payment_probe
short_description: Read a payment host's state in one round trip (changes nothing)
description:
  - Reports the live release (where the current symlink points), whether a release is
    installed completely (its requirements file's sha256 and completion marker), whether
    the service and socket unit files exist, whether firewalld is active, the releases on
    disk, the checksum, mode and owner of the files the role writes, and whether the units
    are active and enabled. One module run instead of a stat, find or systemd query for
    each: the role skips a write whose file already has the wanted content and metadata,
    and a start of units already running, so a re-run that changes nothing is mostly this.
options:
  current_link:
    description: The symlink to the live release.
    type: path
    required: true
  release_dir:
    description: The release about to be deployed.
    type: path
    required: true
  releases_dir:
    description: The directory holding every release.
    type: path
    required: true
  unit_paths:
    description: Unit files whose existence to report, by name.
    type: dict
    default: {}
  firewalld:
    description: Also ask systemd whether firewalld is active.
    type: bool
    default: false
  files:
    description: Files whose sha1, mode and owner to report, by name.
    type: dict
    default: {}
  units:
    description: Units whose ActiveState and UnitFileState to report (one systemctl call).
    type: list
    elements: str
    default: []
  restart_inputs:
    description: >-
      For each unit of units, in the same order, the paths it reads when it starts (unit
      file, environment file, the release symlink). A unit that is active and started
      before one of them last changed (or that systemd says needs a daemon-reload) is
      reported in restart_pending.
    type: list
    elements: list
    default: []
author: roboshop-payment
"""

RETURN = r"""
current_release:
  description: Absolute path the current symlink resolves to, '' when there is none.
  type: str
  returned: always
requirements_sha256:
  description: sha256 of release_dir/requirements.txt, '' when it does not exist.
  type: str
  returned: always
complete:
  description: Whether release_dir/venv/.requirements-<sha256>.ok exists.
  type: bool
  returned: always
units:
  description: For each name of unit_paths, whether the file exists.
  type: dict
  returned: always
firewalld_active:
  description: Whether firewalld is active (false unless asked).
  type: bool
  returned: always
releases:
  description: The releases on disk (directories, hidden entries left out), path and mtime.
  type: list
  returned: always
files:
  description: >-
    For each name of files, {sha1, mode (4 octal digits), owner, group} of the file, or {}
    when it is not a regular file.
  type: dict
  returned: always
unit_states:
  description: For each unit of units, {active, enabled} (ActiveState, UnitFileState).
  type: dict
  returned: always
restart_pending:
  description: >-
    The units that run with older inputs (restart_inputs) than are on disk: a run that
    wrote them failed (or was stopped) before its restart. In the order of units.
  type: list
  returned: always
backups:
  description: >-
    Backup copies (<file>.<pid>.<date>~, the template module's backup) of the files, left
    by a run that stopped before it removed them.
  type: list
  returned: always
"""


def file_facts(module, path):
    try:
        st = os.stat(path, follow_symlinks=False)
    except OSError:
        return {}
    if not os.path.isfile(path) or os.path.islink(path):
        return {}
    return {
        "sha1": module.sha1(path),
        "mode": "%04o" % (st.st_mode & 0o7777),
        "owner": pwd.getpwuid(st.st_uid).pw_name,
        "group": grp.getgrgid(st.st_gid).gr_name,
    }


PROPERTIES = "Id,ActiveState,UnitFileState,ActiveEnterTimestampMonotonic,NeedDaemonReload"


def unit_properties(module, systemctl, units):
    if not units or not systemctl:
        return {}
    _, out, _ = module.run_command([systemctl, "show", f"--property={PROPERTIES}", "--", *units])
    # one block per unit, in the order asked, separated by a blank line
    return {
        unit: dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        for unit, block in zip(units, out.strip().split("\n\n"))
    }


def last_change(path):
    """mtime of the path itself (a symlink's own, when it was pointed elsewhere), 0 if none."""
    try:
        return os.lstat(path).st_mtime
    except OSError:
        return 0.0


def restart_pending(props, inputs):
    """Units that are active but started before one of their inputs last changed."""
    # systemd's timestamps are CLOCK_MONOTONIC, as is time.monotonic(): to wall-clock time
    boot_offset = time.time() - time.monotonic()
    pending = []
    for unit, paths in inputs.items():
        unit_props = props.get(unit, {})
        if unit_props.get("ActiveState") != "active":
            continue  # stopped or failed: its next start reads the files as they are
        entered = int(unit_props.get("ActiveEnterTimestampMonotonic") or 0) / 1e6 + boot_offset
        newest = max((last_change(path) for path in paths), default=0.0)
        if unit_props.get("NeedDaemonReload") == "yes" or newest > entered:
            pending.append(unit)
    return pending


def main():
    module = AnsibleModule(
        argument_spec={
            "current_link": {"type": "path", "required": True},
            "release_dir": {"type": "path", "required": True},
            "releases_dir": {"type": "path", "required": True},
            "unit_paths": {"type": "dict", "default": {}},
            "firewalld": {"type": "bool", "default": False},
            "files": {"type": "dict", "default": {}},
            "units": {"type": "list", "elements": "str", "default": []},
            "restart_inputs": {"type": "list", "elements": "list", "default": []},
        },
        supports_check_mode=True,
    )
    params = module.params
    link = params["current_link"]
    current = os.path.realpath(link) if os.path.islink(link) else ""

    requirements = os.path.join(params["release_dir"], "requirements.txt")
    sha256 = module.sha256(requirements) if os.path.isfile(requirements) else ""
    marker = os.path.join(params["release_dir"], "venv", f".requirements-{sha256}.ok")

    releases = []
    if os.path.isdir(params["releases_dir"]):
        for entry in os.scandir(params["releases_dir"]):
            if entry.is_dir(follow_symlinks=False) and not entry.name.startswith("."):
                releases.append({"path": entry.path, "mtime": entry.stat().st_mtime})

    firewalld_active = False
    systemctl = module.get_bin_path("systemctl")
    if params["firewalld"] and systemctl:
        rc, out, _ = module.run_command([systemctl, "is-active", "firewalld"])
        firewalld_active = rc == 0 and out.strip() == "active"

    props = unit_properties(module, systemctl, params["units"])
    pending = restart_pending(props, dict(zip(params["units"], params["restart_inputs"])))
    module.exit_json(
        changed=False,
        current_release=current,
        requirements_sha256=sha256,
        complete=bool(sha256) and os.path.exists(marker),
        units={name: os.path.exists(path) for name, path in params["unit_paths"].items()},
        firewalld_active=firewalld_active,
        releases=releases,
        files={name: file_facts(module, path) for name, path in params["files"].items()},
        unit_states={
            unit: {"active": p.get("ActiveState", ""), "enabled": p.get("UnitFileState", "")}
            for unit, p in props.items()
        },
        restart_pending=pending,
        backups=sorted(
            b for path in params["files"].values() for b in glob.glob(glob.escape(path) + ".*~")
        ),
    )


if __name__ == "__main__":
    main()
