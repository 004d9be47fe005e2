#!/usr/bin/python
"""Read-only: the service account and directories as they are, in one round trip."""

from __future__ import annotations

import grp
import os
import pwd

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: roboshop_base_probe
short_description: Read the service account and directories (changes nothing)
description:
  - Reports whether a group exists, a user's primary group, shell, home and comment, and
    each directory's mode and owner. The role skips the group, user and directory tasks
    whose state is already the wanted one, so a re-run that changes nothing makes one round
    trip here instead of five.
options:
  user: {type: str, required: true, description: The user name.}
  group: {type: str, required: true, description: The group name.}
  paths: {type: list, elements: path, default: [], description: Directories to read.}
author: roboshop-payment
"""

RETURN = r"""
group_exists: {description: Whether the group exists., type: bool, returned: always}
user:
  description: The user's group, shell, home and comment; {} when it does not exist.
  type: dict
  returned: always
paths:
  description: For each path, {mode (4 octal digits), owner, group} of a directory, {} otherwise.
  type: dict
  returned: always
"""


def directory(path: str) -> dict:
    try:
        st = os.stat(path, follow_symlinks=False)
    except OSError:
        return {}
    if not os.path.isdir(path) or os.path.islink(path):
        return {}
    return {
        "mode": "%04o" % (st.st_mode & 0o7777),
        "owner": pwd.getpwuid(st.st_uid).pw_name,
        "group": grp.getgrgid(st.st_gid).gr_name,
    }


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "user": {"type": "str", "required": True},
            "group": {"type": "str", "required": True},
            "paths": {"type": "list", "elements": "path", "default": []},
        },
        supports_check_mode=True,
    )
    p = module.params
    try:
        grp.getgrnam(p["group"])
        group_exists = True
    except KeyError:
        group_exists = False
    try:
        entry = pwd.getpwnam(p["user"])
        user = {
            "group": grp.getgrgid(entry.pw_gid).gr_name,
            "shell": entry.pw_shell,
            "home": entry.pw_dir,
            "comment": entry.pw_gecos,
        }
    except KeyError:
        user = {}
    module.exit_json(
        changed=False,
        group_exists=group_exists,
        user=user,
        paths={path: directory(path) for path in p["paths"]},
    )


if __name__ == "__main__":
    main()
