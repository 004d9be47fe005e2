#!/usr/bin/python
"""Ensure one RabbitMQ user (password, permissions) or its absence; the password on stdin."""

from __future__ import annotations

DOCUMENTATION = r"""
module: rabbitmq_app_user
short_description: One RabbitMQ application user, its password given to rabbitmqctl on stdin
description:
  - Creates the user if missing, changes its password if it differs (update_password=always),
    and makes its permissions exactly one entry on one vhost (permissions on other vhosts are
    cleared).
  - Why not community.rabbitmq.rabbitmq_user. That module passes the password as an argument
    of rabbitmqctl, where any process list on the broker shows it while the module runs. It
    calls rabbitmqctl five times on every run, and each call starts an Erlang VM (about 3 s
    in all). It also prints a deprecation warning under ansible-core 2.19 and later.
  - This module calls rabbitmqctl twice when nothing changes (list_user_permissions,
    authenticate_user). The password reaches rabbitmqctl only on stdin.
  - With state=absent it deletes the user if it exists (one rabbitmqctl call when it does
    not), e.g. RabbitMQ's default C(guest).
options:
  user: {type: str, required: true, description: The user name.}
  state:
    type: str
    choices: [present, absent]
    default: present
    description: C(absent) deletes the user (password and permissions are then ignored).
  password: {type: str, no_log: true, description: Its password (required when present).}
  vhost: {type: str, default: /, description: The one vhost it gets permissions on.}
  configure_priv: {type: str, default: ^$, description: Configure permission (regex).}
  write_priv: {type: str, default: ^$, description: Write permission (regex).}
  read_priv: {type: str, default: ^$, description: Read permission (regex).}
  update_password:
    type: str
    choices: [always, on_create]
    default: always
    description: C(always) changes the password whenever it is not this one.
supports_check_mode: true
"""

import json  # noqa: E402 (Ansible modules: DOCUMENTATION first)

from ansible.module_utils.basic import AnsibleModule  # noqa: E402

NO_SUCH_USER = 69  # rabbitmqctl's exit status for an unknown user (EX_UNAVAILABLE)


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "user": {"type": "str", "required": True},
            "state": {"type": "str", "choices": ["present", "absent"], "default": "present"},
            "password": {"type": "str", "no_log": True},
            "vhost": {"type": "str", "default": "/"},
            "configure_priv": {"type": "str", "default": "^$"},
            "write_priv": {"type": "str", "default": "^$"},
            "read_priv": {"type": "str", "default": "^$"},
            "update_password": {
                "type": "str",
                "choices": ["always", "on_create"],
                "default": "always",
            },
        },
        required_if=[("state", "present", ["password"])],
        supports_check_mode=True,
    )
    p = module.params
    ctl = module.get_bin_path("rabbitmqctl", required=True)
    secret = (p["password"] or "").encode()

    def run(*args: str, stdin: bytes | None = None, ok: tuple[int, ...] = (0,)):
        rc, out, err = module.run_command(
            [ctl, "-q", *args], data=stdin, binary_data=True, check_rc=False
        )
        if rc not in ok:
            module.fail_json(msg=f"rabbitmqctl {args[0]} failed (rc={rc}): {err.strip()}")
        return rc, out

    want = [
        {
            "vhost": p["vhost"],
            "configure": p["configure_priv"],
            "write": p["write_priv"],
            "read": p["read_priv"],
        }
    ]
    rc, out = run("--formatter", "json", "list_user_permissions", p["user"], ok=(0, NO_SUCH_USER))
    exists = rc == 0
    have = json.loads(out or "[]") if exists else []
    if p["state"] == "absent":
        if exists and not module.check_mode:
            run("delete_user", p["user"])
        module.exit_json(
            changed=exists,
            changes=["user"] if exists else [],
            diff={"before": {"exists": exists, "permissions": have}, "after": {"exists": False}},
        )
    changes: list[str] = []
    if not exists:
        changes = ["user", "permissions"]
    else:
        if p["update_password"] == "always":
            rc, _ = run("authenticate_user", p["user"], stdin=secret, ok=(0, 65))
            if rc != 0:
                changes.append("password")
        if have != want:
            changes.append("permissions")

    if changes and not module.check_mode:
        if not exists:
            run("add_user", p["user"], stdin=secret)
        elif "password" in changes:
            run("change_password", p["user"], stdin=secret)
        if "permissions" in changes:
            for entry in have:
                if entry["vhost"] != p["vhost"]:
                    run("clear_permissions", "-p", entry["vhost"], p["user"])
            run(
                "set_permissions", "-p", p["vhost"], p["user"],
                p["configure_priv"], p["write_priv"], p["read_priv"],
            )  # fmt: skip

    module.exit_json(
        changed=bool(changes),
        changes=changes,
        diff={
            "before": {"exists": exists, "permissions": have},
            "after": {"exists": True, "permissions": want},
        },
    )


if __name__ == "__main__":
    main()
