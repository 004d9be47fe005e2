#!/usr/bin/python
"""Read-only: what the payment role needs to know about a host, in one round trip."""

import os

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: payment_probe
short_description: Read a payment host's state in one round trip (changes nothing)
description:
  - Reports the live release (where the current symlink points), whether a release is
    installed completely (its requirements file's sha256 and completion marker), whether
    the service and socket unit files exist, whether firewalld is active and the releases on
    disk. One module run instead of a stat, find or systemd query for each, which is most of
    the cost of a re-run that changes nothing.
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
"""


def main():
    module = AnsibleModule(
        argument_spec={
            "current_link": {"type": "path", "required": True},
            "release_dir": {"type": "path", "required": True},
            "releases_dir": {"type": "path", "required": True},
            "unit_paths": {"type": "dict", "default": {}},
            "firewalld": {"type": "bool", "default": False},
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

    module.exit_json(
        changed=False,
        current_release=current,
        requirements_sha256=sha256,
        complete=bool(sha256) and os.path.exists(marker),
        units={name: os.path.exists(path) for name, path in params["unit_paths"].items()},
        firewalld_active=firewalld_active,
        releases=releases,
    )


if __name__ == "__main__":
    main()
