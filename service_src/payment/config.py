"""Settings from the environment: every variable, its default and its meaning is in README.md."""

from __future__ import annotations

import ipaddress
import math
import os
import re
import ssl
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass

INT_MAX = 2**31 - 1  # no count, size or duration here needs more
PORT_MAX = 65535
SECONDS_MAX = 86400.0  # no timeout or interval here is longer than a day
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class ConfigError(ValueError):
    """An environment variable has a value the service cannot use."""


def _int(
    env: Mapping[str, str], name: str, default: int, minimum: int = 0, maximum: int = INT_MAX
) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, not {raw!r}") from None
    if not minimum <= value <= maximum:
        raise ConfigError(f"{name} must be between {minimum} and {maximum}, not {raw[:40]}")
    return value


def _float(
    env: Mapping[str, str],
    name: str,
    default: float,
    minimum: float = 0.0,
    maximum: float = SECONDS_MAX,
) -> float:
    """A number of seconds (finite: a wait of `inf` raises OverflowError in threading)."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, not {raw!r}") from None
    if not minimum <= value <= maximum:  # also NaN
        raise ConfigError(f"{name} must be between {minimum} and {maximum:g}, not {raw[:40]}")
    return value


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false, not {raw!r}")


def _str(env: Mapping[str, str], name: str, default: str) -> str:
    value = env.get(name, "").strip()
    return value or default


_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
HOSTNAME = re.compile(rf"(?=.{{1,253}}\Z){_LABEL}(?:\.{_LABEL})*\.?")


def _check_host(name: str, host: str) -> None:
    """A host name (RFC 1123: a doubled dot or a 64-character label would make every
    connect raise UnicodeError) or an IP address."""
    try:
        ipaddress.ip_address(host)
        return
    except ValueError:
        pass
    if not HOSTNAME.fullmatch(host) or re.fullmatch(r"[0-9.]+", host):
        raise ConfigError(f"{name}: {host!r} is not a host name or an IP address")


def host_name(env: Mapping[str, str], name: str, default: str) -> str:
    host = env.get(name, "").strip() or default
    _check_host(name, host)
    return host


def host_list(env: Mapping[str, str], name: str, default: str) -> str:
    """A comma-separated list of host names (RFC 1123) or IP addresses, normalized
    (`a, b` -> `a,b`); each entry checked, none twice."""
    raw = env.get(name, "").strip() or default
    hosts = [h.strip() for h in raw.split(",")]
    for host in hosts:
        if not host:
            raise ConfigError(f"{name} has an empty entry: {raw!r} (comma-separated hosts)")
        _check_host(name, host)
    if len(set(hosts)) != len(hosts):
        raise ConfigError(f"{name} lists a host twice: {raw!r}")
    return ",".join(hosts)


def http_url(env: Mapping[str, str], name: str, default: str) -> str:
    """An http:// or https:// URL with a valid host and port (without a scheme the charge
    would go to http://localhost:80)."""
    raw = env.get(name, "").strip() or default
    url = urllib.parse.urlsplit(raw)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise ConfigError(f"{name} must be an http:// or https:// URL with a host, not {raw!r}")
    _check_host(name, url.hostname)
    try:
        url.port  # noqa: B018 (raises ValueError when out of range)
    except ValueError:
        raise ConfigError(f"{name}: the port of {raw!r} is not a port number") from None
    return raw


def redis_url(env: Mapping[str, str], name: str, default: str) -> str:
    raw = env.get(name, "").strip() or default
    if urllib.parse.urlsplit(raw).scheme not in ("redis", "rediss", "unix"):
        raise ConfigError(f"{name} must be a redis://, rediss:// or unix:// URL, not {raw!r}")
    return raw


AMQPS_PORT = 5671


def tls_ca_file(env: Mapping[str, str], tls: bool) -> str:
    """AMQP_CA_FILE: the CA certificates (PEM) the broker's certificate must chain to, with
    AMQP_TLS on; empty = the system's trust store. Loaded here once, so that a missing,
    unreadable or non-PEM file stops the service at start (ConfigError naming the file)
    instead of every connection failing later. Set with AMQP_TLS off, it is refused: the
    connection would be plain AMQP although a CA was meant to verify it."""
    path = env.get("AMQP_CA_FILE", "").strip()
    if not tls:
        if path:
            raise ConfigError(
                f"AMQP_CA_FILE is set ({path!r}) but AMQP_TLS is off: set AMQP_TLS=true "
                "for AMQPS, or unset AMQP_CA_FILE"
            )
        return ""
    if path:
        try:
            ssl.create_default_context(cafile=path)
        except (OSError, ssl.SSLError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise ConfigError(
                f"AMQP_CA_FILE {path!r} cannot be used with AMQP_TLS: {reason}"
            ) from None
    return path


@dataclass(frozen=True)
class Settings:
    cart_host: str = "cart"
    cart_port: int = 8080
    user_host: str = "user"
    user_port: int = 8080
    gateway_url: str = "https://paypal.com/"
    delay_ms: int = 0
    amqp_host: str = "rabbitmq"  # one host, or several separated by commas (amqp_hosts)
    amqp_port: int = 5672  # 5671 (AMQPS) when amqp_tls and AMQP_PORT is unset
    # AMQPS: TLS to every broker host, its certificate verified against amqp_ca_file (the
    # system's trust store when empty) and its name against the host name in AMQP_HOST.
    amqp_tls: bool = False
    amqp_ca_file: str = ""
    # The payment role's user; the password has no default: AMQP_PASS must be set
    # (check_amqp_credentials, when the service is built).
    amqp_user: str = "roboshop"
    amqp_pass: str = ""
    amqp_vhost: str = "/"
    amqp_exchange: str = "robot-shop"
    amqp_queue: str = "orders"
    amqp_routing_key: str = "orders"
    amqp_heartbeat: int = 30
    connect_timeout: float = 1.0
    read_timeout: float = 5.0
    gateway_timeout: float = 10.0
    publish_timeout: float = 3.0
    state_dir: str = "/var/lib/payment"
    idempotency_backend: str = "sqlite"
    redis_url: str = "redis://localhost:6379/0"
    idempotency_ttl: int = 86400
    idempotency_lease: int = 0  # 0: derived from the timeouts (claim_lease)
    max_body: int = 1024 * 1024
    health_cache: float = 2.0
    outbox_poll: float = 1.0
    outbox_max: int = 100000
    health_require_broker: bool = True  # as the payment role sets it
    log_level: str = "INFO"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        e = os.environ if env is None else env
        d = cls()
        backend = _str(e, "PAYMENT_IDEMPOTENCY_BACKEND", d.idempotency_backend).lower()
        if backend not in ("sqlite", "redis"):
            raise ConfigError("PAYMENT_IDEMPOTENCY_BACKEND must be sqlite or redis")
        tls = _bool(e, "AMQP_TLS", d.amqp_tls)
        ca_file = tls_ca_file(e, tls)
        settings = cls(
            cart_host=host_name(e, "CART_HOST", d.cart_host),
            cart_port=_int(e, "CART_PORT", d.cart_port, 1, PORT_MAX),
            user_host=host_name(e, "USER_HOST", d.user_host),
            user_port=_int(e, "USER_PORT", d.user_port, 1, PORT_MAX),
            gateway_url=http_url(e, "PAYMENT_GATEWAY", d.gateway_url),
            delay_ms=_int(e, "PAYMENT_DELAY_MS", d.delay_ms),
            amqp_host=host_list(e, "AMQP_HOST", d.amqp_host),
            amqp_port=_int(e, "AMQP_PORT", AMQPS_PORT if tls else d.amqp_port, 1, PORT_MAX),
            amqp_tls=tls,
            amqp_ca_file=ca_file,
            amqp_user=_str(e, "AMQP_USER", d.amqp_user),
            amqp_pass=e.get("AMQP_PASS", d.amqp_pass),
            amqp_vhost=_str(e, "AMQP_VHOST", d.amqp_vhost),
            amqp_exchange=_str(e, "AMQP_EXCHANGE", d.amqp_exchange),
            amqp_queue=_str(e, "AMQP_QUEUE", d.amqp_queue),
            amqp_routing_key=_str(e, "AMQP_ROUTING_KEY", d.amqp_routing_key),
            amqp_heartbeat=_int(e, "AMQP_HEARTBEAT", d.amqp_heartbeat, 0, PORT_MAX),
            connect_timeout=_float(e, "PAYMENT_CONNECT_TIMEOUT", d.connect_timeout, 0.001),
            read_timeout=_float(e, "PAYMENT_READ_TIMEOUT", d.read_timeout, 0.001),
            gateway_timeout=_float(e, "PAYMENT_GATEWAY_TIMEOUT", d.gateway_timeout, 0.001),
            publish_timeout=_float(e, "PAYMENT_PUBLISH_TIMEOUT", d.publish_timeout, 0.001),
            state_dir=_str(e, "PAYMENT_STATE_DIR", d.state_dir),
            idempotency_backend=backend,
            redis_url=redis_url(e, "PAYMENT_REDIS_URL", d.redis_url)
            if backend == "redis"
            else _str(e, "PAYMENT_REDIS_URL", d.redis_url),
            idempotency_ttl=_int(e, "PAYMENT_IDEMPOTENCY_TTL", d.idempotency_ttl, 1),
            idempotency_lease=_int(e, "PAYMENT_IDEMPOTENCY_LEASE", d.idempotency_lease, 1),
            max_body=_int(e, "PAYMENT_MAX_BODY", d.max_body, 1024),
            health_cache=_float(e, "PAYMENT_HEALTH_CACHE", d.health_cache),
            outbox_poll=_float(e, "PAYMENT_OUTBOX_POLL", d.outbox_poll, 0.01),
            outbox_max=_int(e, "PAYMENT_OUTBOX_MAX", d.outbox_max, 1),
            health_require_broker=_bool(
                e, "PAYMENT_HEALTH_REQUIRE_BROKER", d.health_require_broker
            ),
            log_level=_str(e, "PAYMENT_LOG_LEVEL", d.log_level).upper(),
        )
        if settings.log_level not in LOG_LEVELS:
            raise ConfigError(f"PAYMENT_LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}")
        if settings.idempotency_ttl <= settings.pending_age:
            # the key's `charging` marker (kept for the TTL) must outlive any charge: expired
            # while a charge may still run, a retry with the key would claim it and charge again
            raise ConfigError(
                f"PAYMENT_IDEMPOTENCY_TTL ({settings.idempotency_ttl} s) must be longer than a "
                f"payment can be in flight ({settings.pending_age:.0f} s with these timeouts)"
            )
        return settings

    def check_amqp_credentials(self) -> None:
        """ConfigError when AMQP_PASS is unset or empty: the broker password has no default
        (no guest/guest; RabbitMQ refuses guest from other hosts, the payment role deletes it).
        Checked when the service is built (Service) and by `payment.ops republish`, not by
        from_env: reading the settings (`payment.ops list`) needs no broker."""
        if not self.amqp_pass:
            raise ConfigError(
                f"AMQP_PASS is not set: the password of the broker user {self.amqp_user!r} "
                "(AMQP_USER) has no default"
            )

    @property
    def before_charge(self) -> float:
        """The longest the steps between a payment's `pending` record and its gateway call
        can take: PAYMENT_DELAY_MS and the user check's answer, whose connection may be
        retried once after a failed connect and the request once after a failed read
        (payment/deps.py): 3 connects and 2 reads at most."""
        return self.delay_ms / 1000.0 + 3 * self.connect_timeout + 2 * self.read_timeout

    @property
    def charge_age(self) -> float:
        """After this many seconds from its start a charge call has surely ended: its connect
        and read, and 5 s to spare."""
        return self.connect_timeout + self.gateway_timeout + 5.0

    @property
    def pending_age(self) -> float:
        """After this many seconds from its creation a `pending` record's charge call has
        surely ended: the steps before the charge, then the charge."""
        return self.before_charge + self.charge_age

    @property
    def claim_lease(self) -> int:
        """How long an Idempotency-Key's in-flight claim holds before another request may
        take it over (its worker died): PAYMENT_IDEMPOTENCY_LEASE, or by default what the
        steps from the claim to the charge (which ends the claim) can take, + 5 s. A claim
        taken over from a request that is still alive costs no money: that request's
        `charging` mark fails and it charges nothing (service.py, `_mark_charging`)."""
        return self.idempotency_lease or math.ceil(self.before_charge + 5.0)

    @property
    def amqp_hosts(self) -> tuple[str, ...]:
        """The brokers to try, in order (AMQP_HOST, comma-separated, all on AMQP_PORT)."""
        return tuple(h.strip() for h in self.amqp_host.split(",") if h.strip())

    @property
    def cart_base(self) -> str:
        return f"http://{self.cart_host}:{self.cart_port}"

    @property
    def user_base(self) -> str:
        return f"http://{self.user_host}:{self.user_port}"
