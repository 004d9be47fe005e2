#!/usr/bin/python
"""The broker's application users (passwords, permissions) and absent ones, in one read."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: rabbitmq_app_users
short_description: RabbitMQ users, their passwords and permissions; passwords on stdin only
description:
  - For each entry of I(users), creates the user if missing, changes its password if it
    differs (update_password=always), and makes its permissions exactly one entry on
    I(vhost) (permissions on other vhosts are cleared). Deletes every user named in I(absent)
    (e.g. RabbitMQ's default C(guest)). Other users are left alone.
  - One rabbitmqctl call when nothing changes. C(export_definitions) has every user with its
    salted password hash and every permission; the password is checked against that hash
    here, by RabbitMQ's documented scheme (base64 of a 4-byte salt followed by the SHA-256,
    or SHA-512, of salt + password). Under another hashing algorithm it asks rabbitmqctl
    C(authenticate_user). A password reaches rabbitmqctl only on stdin.
  - Why not community.rabbitmq.rabbitmq_user. That module passes the password as an argument
    of rabbitmqctl, where any process list on the broker shows it while the module runs. It
    calls rabbitmqctl five times per user on every run (each call starts an Erlang VM), and
    it prints a deprecation warning under ansible-core 2.19 and later.
options:
  users:
    type: list
    elements: dict
    default: []
    description:
      - "Each: name, password (no_log), configure_priv, write_priv, read_priv (regexes,
        default C(^$): nothing)."
  absent: {type: list, elements: str, default: [], description: Users to delete.}
  vhost: {type: str, default: /, description: The one vhost the users get permissions on.}
  update_password:
    type: str
    choices: [always, on_create]
    default: always
    description: C(always) changes a password whenever it is not this one.
supports_check_mode: true
"""

# RabbitMQ's password hashing modules and the digest each applies to salt + password.
HASHES = {
    "rabbit_password_hashing_sha256": hashlib.sha256,
    "rabbit_password_hashing_sha512": hashlib.sha512,
}
PRIVS = ("configure", "write", "read")


def password_matches(password: bytes, password_hash: str, algorithm: str) -> bool | None:
    """Whether `password` is the one behind RabbitMQ's `password_hash` (None: cannot tell)."""
    digest = HASHES.get(algorithm)
    if digest is None or not password_hash:
        return None
    raw = base64.b64decode(password_hash)
    return hmac.compare_digest(digest(raw[:4] + password).digest(), raw[4:])


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "users": {
                "type": "list",
                "elements": "dict",
                "default": [],
                "options": {
                    "name": {"type": "str", "required": True},
                    "password": {"type": "str", "required": True, "no_log": True},
                    "configure_priv": {"type": "str", "default": "^$"},
                    "write_priv": {"type": "str", "default": "^$"},
                    "read_priv": {"type": "str", "default": "^$"},
                },
            },
            "absent": {"type": "list", "elements": "str", "default": []},
            "vhost": {"type": "str", "default": "/"},
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

    def run(*args: str, stdin: bytes | None = None, ok: tuple[int, ...] = (0,)) -> int:
        # A password command gets exactly `<command> <user>`, no -q: from 3.12.11/3.13 on the
        # rabbitmqctl script closes stdin (-noinput) unless it sees those two arguments alone,
        # and the CLI then waits forever for the password (RabbitMQ 4.0, Debian 13).
        quiet = [] if stdin is not None else ["-q"]
        rc, _, err = module.run_command(
            [ctl, *quiet, *args], data=stdin, binary_data=True, check_rc=False
        )
        if rc not in ok:
            module.fail_json(msg=f"rabbitmqctl {args[0]} failed (rc={rc}): {err.strip()}")
        return rc

    rc, out, err = module.run_command([ctl, "-q", "export_definitions", "-"], check_rc=False)
    if rc != 0:
        module.fail_json(msg=f"rabbitmqctl export_definitions failed (rc={rc}): {err.strip()}")
    definitions = json.loads(out)
    existing = {u["name"]: u for u in definitions.get("users", [])}
    perms: dict[str, list[dict]] = {}
    for perm in definitions.get("permissions", []):
        perms.setdefault(perm["user"], []).append({k: perm[k] for k in ("vhost", *PRIVS)})

    changes: dict[str, list[str]] = {}
    for user in p["users"]:
        name, secret = user["name"], user["password"].encode()
        want = [{"vhost": p["vhost"], **{k: user[f"{k}_priv"] for k in PRIVS}}]
        have = perms.get(name, [])
        todo: list[str] = []
        if name not in existing:
            todo = ["user", "permissions"]
        else:
            if p["update_password"] == "always":
                entry = existing[name]
                same = password_matches(
                    secret, entry.get("password_hash", ""), entry.get("hashing_algorithm", "")
                )
                if same is None:  # an algorithm this module does not know: ask the broker
                    same = run("authenticate_user", name, stdin=secret, ok=(0, 65)) == 0
                if not same:
                    todo.append("password")
            if have != want:
                todo.append("permissions")
        if todo:
            changes[name] = todo
        if todo and not module.check_mode:
            if "user" in todo:
                run("add_user", name, stdin=secret)
            elif "password" in todo:
                run("change_password", name, stdin=secret)
            if "permissions" in todo:
                for entry in have:
                    if entry["vhost"] != p["vhost"]:
                        run("clear_permissions", "-p", entry["vhost"], name)
                run("set_permissions", "-p", p["vhost"], name, *(want[0][k] for k in PRIVS))
    for name in p["absent"]:
        if name in existing:
            changes[name] = ["deleted"]
            if not module.check_mode:
                run("delete_user", name)

    module.exit_json(changed=bool(changes), changes=changes)


if __name__ == "__main__":
    main()
