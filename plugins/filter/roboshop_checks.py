"""The input rules the roles share, in one place: every role's tasks/validate.yml uses them.

ansible.cfg names this directory (filter_plugins; molecule: ANSIBLE_FILTER_PLUGINS in
.config/molecule/config.yml). A rule returns what is wrong as the words that follow a
variable's name ("" when nothing is), so that every message reads "<name> <problem>". A
secret's rule never shows the value.

    {{ {name: value, ...} | roboshop_problems(rule, names, *args) }}
        -> ["<name> (<where the inventory sets it>) <problem>", ...] for the values that
           break the rule: host, http_url, port, int (args: minimum), path, account, secret,
           amqp_password, redis_password (args: the refused secrets, [{value, reason}]),
           pem_cert, pem_key
    {{ [a, b] | roboshop_indexed('x', '.port') }}  -> {'x[0].port': a, 'x[1].port': b}
    {{ name | roboshop_label(names) }}              -> "<name> (<where it is set>)" or "<name>"

`names` is a role's <role>_validate_names, {role variable: where the inventory sets it}
(group_vars/all.yml fills it); "x[2]" and "x[2].port" fall back to the entry of "x".
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterable, Mapping

_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
IPV4 = re.compile(rf"^({_OCTET}\.){{3}}{_OCTET}$")
IPV6 = re.compile(r"^[0-9A-Fa-f]{0,4}(:[0-9A-Fa-f]{0,4}){2,7}$")
HOSTNAME = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*$")
_INDEXED = re.compile(r"^([A-Za-z0-9_]+)\[[0-9]+\]")


def host(value: object) -> str:
    """A host name, an IPv4 or an IPv6 address (not empty, not a <PLACEHOLDER>)."""
    if not isinstance(value, str) or not value.strip():
        return "is empty"
    if re.search("[<>]", value):
        return f"is a placeholder ('{value}'): put the real host name or IP there"
    if not (
        IPV4.match(value)
        or IPV6.match(value)
        or (HOSTNAME.match(value) and not re.match(r"^[0-9.]+$", value))
    ):
        return f"is '{value}', not a host name or IP address"
    return ""


def http_url(value: object) -> str:
    """An http:// or https:// URL whose host passes `host` and whose port is a port (the
    service refuses anything else at start: service_src/payment/config.py, http_url)."""
    if not isinstance(value, str) or re.search(r"[\s<>]", value):
        return f"is '{value}', not an http(s):// URL"
    url = urllib.parse.urlsplit(value)
    if url.scheme not in ("http", "https") or not url.hostname:
        return f"is '{value}', not an http(s):// URL"
    if host(url.hostname):
        return f"is '{value}': its host {host(url.hostname)}"
    try:
        url.port  # noqa: B018 (raises ValueError when out of range)
    except ValueError:
        return f"is '{value}': its port is not a port number"
    return ""


def integer(value: object, minimum: int, maximum: int | None = None) -> str:
    """An integer (or its digits) from minimum (to maximum)."""
    if isinstance(value, bool) or not re.match(r"^[0-9]+$", str(value)):
        return f"is '{value}', not an integer"
    number = int(str(value))
    if maximum is None and number < minimum:
        return f"is {value}, not >= {minimum}"
    if maximum is not None and not minimum <= number <= maximum:
        return f"is {value}, not in {minimum}-{maximum}"
    return ""


def path(value: object) -> str:
    """An absolute directory path other than / (no spaces, quotes or control characters:
    it is written into the unit and the service's environment)."""
    if not isinstance(value, str) or not value.strip():
        return "is empty"
    if not re.match(r"^/[A-Za-z0-9._/-]*[A-Za-z0-9._-]$", value) or "/../" in f"{value}/":
        return f"is '{value}', not an absolute path (letters, digits, . _ - and /; not /)"
    return ""


def account(value: object) -> str:
    """A system user or group name (useradd's portable shape)."""
    if not isinstance(value, str) or not re.match(r"^[a-z_][a-z0-9_-]{0,31}$", value):
        return f"is '{value}', not a user or group name (a-z, 0-9, _ and -, at most 32)"
    return ""


def port(value: object) -> str:
    """A TCP port: an integer in 1-65535."""
    return integer(value, 1, 65535)


def secret(value: object, refused: Iterable[Mapping] = ()) -> str:
    """Set (from the vault), not a <PLACEHOLDER>, and none of the refused values (the lab's
    outside the lab): their reason is given, never the value."""
    if not isinstance(value, str) or not value:
        return "is empty or not defined: put it in the vault file (README, Secrets)"
    if re.match(r"^<.*>$", value):
        return "is a placeholder"
    for entry in refused or ():
        if value == entry["value"]:
            return f"is {entry['reason']}"
    return ""


def amqp_password(value: object, refused: Iterable[Mapping] = ()) -> str:
    """An AMQP password: a secret without '$' and not starting with '~'."""
    problem = secret(value, refused)
    if not problem and ("$" in value or value.startswith("~")):  # type: ignore[operator]
        return (
            "contains '$' or starts with '~': community.rabbitmq.rabbitmq_user would expand it "
            "(as a shell variable / home directory) and set another password than payment.env "
            "gets; choose one without"
        )
    return problem


def redis_password(value: object, refused: Iterable[Mapping] = ()) -> str:
    """A Redis password: a secret without white space (one line of requirepass)."""
    problem = secret(value, refused)
    if not problem and re.search(r"\s", value):  # type: ignore[arg-type]
        return "contains white space: choose one without"
    return problem


_PEM_CERT = re.compile(r"-----BEGIN CERTIFICATE-----\s[A-Za-z0-9+/=\s]+-----END CERTIFICATE-----")
_PEM_KEY = re.compile(
    r"-----BEGIN ([A-Z]+ )?PRIVATE KEY-----\s[A-Za-z0-9+/=\s]+-----END ([A-Z]+ )?PRIVATE KEY-----"
)


def pem_cert(value: object) -> str:
    """PEM certificate(s): the content, not a path (one or more CERTIFICATE blocks)."""
    if not isinstance(value, str) or not value.strip():
        return "is empty: put the PEM certificate there (its content, not a path)"
    if re.match(r"^<.*>$", value.strip()):
        return "is a placeholder"
    if not _PEM_CERT.search(value):
        return "is not a PEM certificate (-----BEGIN CERTIFICATE----- ...; the content, not a path)"
    return ""


def pem_key(value: object) -> str:
    """A PEM private key (a secret: the value is never shown)."""
    if not isinstance(value, str) or not value.strip():
        return "is empty or not defined: put it in the vault file (README, Secrets)"
    if re.match(r"^<.*>$", value.strip()):
        return "is a placeholder"
    if not _PEM_KEY.search(value):
        return "is not a PEM private key (-----BEGIN PRIVATE KEY----- ...; the content, not a path)"
    return ""


RULES = {
    "host": host,
    "http_url": http_url,
    "port": port,
    "int": integer,
    "path": path,
    "account": account,
    "secret": secret,
    "amqp_password": amqp_password,
    "redis_password": redis_password,
    "pem_cert": pem_cert,
    "pem_key": pem_key,
}


def label(name: str, names: Mapping | None = None) -> str:
    """The variable's name, and where the inventory sets it when the role was told."""
    names = names or {}
    source = names.get(name)
    indexed = _INDEXED.match(name)
    if source is None and indexed:
        source = names.get(indexed.group(1))
    return f"{name} ({source})" if source and source != name else name


def problems(values: Mapping, rule: str, names: Mapping | None = None, *args) -> list[str]:
    check = RULES[rule]
    found = ((name, check(value, *args)) for name, value in values.items())
    return [f"{label(name, names)} {problem}" for name, problem in found if problem]


def indexed(values: Iterable, name: str, suffix: str = "") -> dict:
    return {f"{name}[{i}]{suffix}": value for i, value in enumerate(values)}


class FilterModule:
    def filters(self):
        return {
            "roboshop_problems": problems,
            "roboshop_indexed": indexed,
            "roboshop_label": label,
        }
