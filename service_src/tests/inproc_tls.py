"""AMQPS settings and pika's TLS options, without a broker and without a network: AMQP_TLS and
AMQP_CA_FILE are parsed and refused as the README says, every broker host gets SSLOptions that
verify the certificate against the CA and its name against that host, and those options make
a real TLS handshake (over a socket pair, with a CA and a broker certificate made here by
`openssl`) succeed for the right CA and host name and fail for a wrong one of either."""

from __future__ import annotations

import socket
import ssl
import subprocess
import threading
from pathlib import Path

import pika
import pytest
from inproc import offline  # noqa: F401  (a fixture, used by pytestmark)
from payment.amqp import connect_error, connection_parameters, ssl_options
from payment.config import AMQPS_PORT, ConfigError, Settings

pytestmark = pytest.mark.usefixtures("offline")


def _openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)


def make_ca(directory: Path, name: str) -> tuple[Path, Path]:
    """A self-signed CA: (certificate, key)."""
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", key, "-out", cert, "-days", "2", "-subj", f"/CN={name}",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")  # fmt: skip
    return cert, key


def make_server_cert(directory: Path, ca: tuple[Path, Path], sans: str) -> tuple[Path, Path]:
    """A broker certificate signed by `ca` for the subjectAltName `sans`: (certificate, key)."""
    cert, key, csr = directory / "broker.pem", directory / "broker.key", directory / "broker.csr"
    ext = directory / "broker.ext"
    ext.write_text(f"subjectAltName={sans}\nextendedKeyUsage=serverAuth\n")
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", key, "-out", csr, "-subj", "/CN=broker")  # fmt: skip
    _openssl("x509", "-req", "-in", csr, "-CA", ca[0], "-CAkey", ca[1], "-CAcreateserial",
             "-out", cert, "-days", "2", "-extfile", ext)  # fmt: skip
    return cert, key


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("pki")
    ca = make_ca(d, "lab-ca")
    other_ca = make_ca(d, "other-ca")
    cert, key = make_server_cert(d, ca, "DNS:rabbitmq,DNS:lab-rabbitmq,IP:127.0.0.1")
    not_pem = d / "not-a-ca.pem"
    not_pem.write_text("not a certificate\n")
    return {"ca": ca[0], "other_ca": other_ca[0], "cert": cert, "key": key, "not_pem": not_pem}


# -- AMQP_TLS / AMQP_CA_FILE --------------------------------------------------------------------
def test_tls_is_off_by_default() -> None:
    s = Settings.from_env({})
    assert (s.amqp_tls, s.amqp_port, s.amqp_ca_file) == (False, 5672, "")
    assert all(p.ssl_options is None for p in connection_parameters(s))


@pytest.mark.parametrize("raw", ["true", "1", "yes", "on", " TRUE "])
def test_tls_on_defaults_to_port_5671(raw: str, pki: dict[str, Path]) -> None:
    s = Settings.from_env({"AMQP_TLS": raw, "AMQP_CA_FILE": str(pki["ca"])})
    assert (s.amqp_tls, s.amqp_port, s.amqp_ca_file) == (True, AMQPS_PORT, str(pki["ca"]))
    assert AMQPS_PORT == 5671


def test_an_explicit_port_wins_over_5671(pki: dict[str, Path]) -> None:
    env = {"AMQP_TLS": "true", "AMQP_CA_FILE": str(pki["ca"]), "AMQP_PORT": "15671"}
    assert Settings.from_env(env).amqp_port == 15671


def test_tls_without_a_ca_file_uses_the_system_trust_store() -> None:
    s = Settings.from_env({"AMQP_TLS": "true"})
    assert (s.amqp_tls, s.amqp_ca_file) == (True, "")
    (params,) = connection_parameters(s)
    assert params.ssl_options is not None
    assert params.ssl_options.context.verify_mode == ssl.CERT_REQUIRED


def test_a_bad_amqp_tls_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"^AMQP_TLS must be true or false, not 'maybe'"):
        Settings.from_env({"AMQP_TLS": "maybe"})


def test_a_missing_ca_file_is_refused_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "amqp-ca.pem"
    with pytest.raises(ConfigError, match=r"^AMQP_CA_FILE '.*amqp-ca\.pem' cannot be used") as e:
        Settings.from_env({"AMQP_TLS": "true", "AMQP_CA_FILE": str(missing)})
    assert str(missing) in str(e.value) and "No such file" in str(e.value)


def test_a_ca_file_that_is_not_pem_is_refused(pki: dict[str, Path]) -> None:
    with pytest.raises(ConfigError, match=r"^AMQP_CA_FILE '.*not-a-ca\.pem' cannot be used"):
        Settings.from_env({"AMQP_TLS": "true", "AMQP_CA_FILE": str(pki["not_pem"])})


def test_a_ca_file_without_tls_is_refused(pki: dict[str, Path]) -> None:
    with pytest.raises(ConfigError, match=r"^AMQP_CA_FILE is set .* but AMQP_TLS is off"):
        Settings.from_env({"AMQP_CA_FILE": str(pki["ca"])})


# -- pika.SSLOptions per broker host ------------------------------------------------------------
def test_each_broker_host_gets_ssl_options_naming_it(pki: dict[str, Path]) -> None:
    env = {"AMQP_TLS": "true", "AMQP_CA_FILE": str(pki["ca"])}
    s = Settings.from_env({**env, "AMQP_HOST": "rabbit1,mq.example.com.,10.0.0.3"})
    params = connection_parameters(s, heartbeat=30)
    assert [p.host for p in params] == ["rabbit1", "mq.example.com.", "10.0.0.3"]
    assert [p.port for p in params] == [5671, 5671, 5671]
    assert [p.ssl_options.server_hostname for p in params] == [
        "rabbit1", "mq.example.com", "10.0.0.3",
    ]  # fmt: skip
    for p in params:
        assert isinstance(p.ssl_options, pika.SSLOptions)
        context = p.ssl_options.context
        assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
        assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
        # the lab CA is the one trusted (not the system's store)
        assert [c["subject"] for c in context.get_ca_certs()] == [((("commonName", "lab-ca"),),)]


def test_no_ssl_options_without_tls() -> None:
    assert ssl_options(Settings(), "rabbitmq") is None


def _handshake(client: ssl.SSLContext, server_hostname: str, pki: dict[str, Path]) -> None:
    """A TLS handshake between `client` (as payment's publisher wraps its socket) and a
    server presenting the broker certificate, over a socket pair: raises what the client
    raises."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(pki["cert"], pki["key"])
    a, b = socket.socketpair()
    a.settimeout(10)
    b.settimeout(10)

    def serve() -> None:
        try:
            with server_ctx.wrap_socket(b, server_side=True) as tls:
                tls.recv(1)
        except (OSError, ssl.SSLError):
            pass

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    try:
        with client.wrap_socket(a, server_hostname=server_hostname) as tls:
            tls.sendall(b"x")
    finally:
        a.close()
        server.join(10)
        b.close()


def _client(pki: dict[str, Path], host: str, ca: str = "ca") -> pika.SSLOptions:
    s = Settings.from_env({"AMQP_TLS": "true", "AMQP_CA_FILE": str(pki[ca]), "AMQP_HOST": host})
    (params,) = connection_parameters(s)
    return params.ssl_options


@pytest.mark.parametrize("host", ["rabbitmq", "lab-rabbitmq", "127.0.0.1"])
def test_the_broker_certificate_is_accepted_for_its_names(pki: dict[str, Path], host: str) -> None:
    options = _client(pki, host)
    _handshake(options.context, options.server_hostname, pki)


def test_a_host_name_the_certificate_does_not_name_is_refused(pki: dict[str, Path]) -> None:
    options = _client(pki, "rabbit2")
    with pytest.raises(ssl.SSLCertVerificationError, match=r"Hostname mismatch|doesn't match"):
        _handshake(options.context, options.server_hostname, pki)


def test_a_certificate_from_another_ca_is_refused(pki: dict[str, Path]) -> None:
    options = _client(pki, "rabbitmq", ca="other_ca")
    with pytest.raises(ssl.SSLCertVerificationError, match="unable to get local issuer"):
        _handshake(options.context, options.server_hostname, pki)


def test_a_failed_connection_names_the_certificate_error() -> None:
    """The log and /health's rabbitmq_error say why: pika's workflow error has an empty
    str(), its last attempt's error holds the certificate verification failure."""
    from pika.adapters.utils.connection_workflow import (
        AMQPConnectionWorkflowFailed,
        AMQPConnectorTransportSetupError,
    )

    cause = ssl.SSLCertVerificationError(
        1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: unable to get local issuer"
    )
    failed = AMQPConnectionWorkflowFailed([AMQPConnectorTransportSetupError(cause)])
    assert str(failed) == ""
    assert "CERTIFICATE_VERIFY_FAILED" in connect_error(failed)
    assert connect_error(ConnectionRefusedError("refused")) == "ConnectionRefusedError: refused"
