#!/usr/bin/python
"""Ensure one RabbitMQ user, its password and its permissions, the password on stdin only."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

from ansible.module_utils.basic import AnsibleModule

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
  - This module calls rabbitmqctl once when nothing changes (export_definitions, which has
    every user with its salted password hash, and every permission). The password is checked
    against that hash here, by RabbitMQ's documented scheme (base64 of a 4-byte salt followed
    by the SHA-256, or SHA-512, of salt + password); under another hashing algorithm it asks
    rabbitmqctl authenticate_user. The password reaches rabbitmqctl only on stdin.
options:
  user: {type: str, required: true, description: The user name.}
  password: {type: str, required: true, no_log: true, description: Its password.}
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


# RabbitMQ's password hashing modules and the digest each one applies to salt + password.
HASHES = {
    "rabbit_password_hashing_sha256": hashlib.sha256,
    "rabbit_password_hashing_sha512": hashlib.sha512,
}


def password_matches(password: bytes, password_hash: str, algorithm: str) -> bool | None:
    """Whether `password` is the one behind RabbitMQ's `password_hash` (None: cannot tell)."""
    digest = HASHES.get(algorithm)
    if digest is None:
        return None
    raw = base64.b64decode(password_hash)
    salt, stored = raw[:4], raw[4:]
    return hmac.compare_digest(digest(salt + password).digest(), stored)


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "user": {"type": "str", "required": True},
            "password": {"type": "str", "required": True, "no_log": True},
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
        supports_check_mode=True,
    )
    p = module.params
    ctl = module.get_bin_path("rabbitmqctl", required=True)
    secret = p["password"].encode()

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
    _, out = run("export_definitions", "-")
    definitions = json.loads(out)
    user = next((u for u in definitions.get("users", []) if u["name"] == p["user"]), None)
    exists = user is not None
    keys = ("vhost", "configure", "write", "read")
    have = [
        {k: perm[k] for k in keys}
        for perm in definitions.get("permissions", [])
        if perm["user"] == p["user"]
    ]
    changes: list[str] = []
    if not exists:
        changes = ["user", "permissions"]
    else:
        if p["update_password"] == "always":
            same = password_matches(
                secret, user.get("password_hash", ""), user.get("hashing_algorithm", "")
            )
            if same is None:  # an algorithm this module does not know: ask the broker
                same = run("authenticate_user", p["user"], stdin=secret, ok=(0, 65))[0] == 0
            if not same:
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
