"""TLS against a real broker node started with certificates generated here.

A CA signs a server certificate for ``localhost`` (and 127.0.0.1) and a client certificate;
a second, unrelated CA plays the attacker's. The node listens for AMQPS with the server
certificate; hutch must verify the certificate chain and the host name by default and fail
with a clear :class:`~hutch.ConnectError` otherwise.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from hutch import AuthenticationError, ConnectError, Connection, Publisher, Queue, TlsOptions
from hutch.testing import BrokerError, LocalBroker, TlsFiles

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.rabbitmq_only("TLS: the memory broker has no network listener"),
]

_Key = ec.EllipticCurvePrivateKey


def _write_key(key: _Key, path: Path) -> str:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    os.chmod(path, 0o600)
    return str(path)


def _write_cert(cert: x509.Certificate, path: Path) -> str:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return str(path)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _make_ca(common_name: str) -> tuple[x509.Certificate, _Key]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _issue(
    ca: x509.Certificate, ca_key: _Key, common_name: str, *, server: bool
) -> tuple[x509.Certificate, _Key]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    return builder.sign(ca_key, hashes.SHA256()), key


@dataclass(frozen=True)
class Pki:
    ca: str
    wrong_ca: str
    server_cert: str
    server_key: str
    client_cert: str
    client_key: str


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    ca, ca_key = _make_ca("hutch test CA")
    wrong, _ = _make_ca("some other CA")
    server, server_key = _issue(ca, ca_key, "localhost", server=True)
    client, client_key = _issue(ca, ca_key, "hutch-client", server=False)
    return Pki(
        ca=_write_cert(ca, d / "ca.pem"),
        wrong_ca=_write_cert(wrong, d / "wrong-ca.pem"),
        server_cert=_write_cert(server, d / "server.pem"),
        server_key=_write_key(server_key, d / "server.key"),
        client_cert=_write_cert(client, d / "client.pem"),
        client_key=_write_key(client_key, d / "client.key"),
    )


@pytest.fixture(scope="module")
def tls_broker(pki: Pki) -> Iterator[LocalBroker]:
    broker = LocalBroker(
        tls=TlsFiles(ca_cert=pki.ca, server_cert=pki.server_cert, server_key=pki.server_key)
    )
    try:
        broker.start()
    except BrokerError as exc:
        broker.close()
        pytest.fail(f"cannot start a TLS broker node: {exc}", pytrace=False)
    with broker:
        yield broker


def _tls_url(broker: LocalBroker) -> str:
    url = broker.tls_url
    assert url is not None
    return url


def _roundtrip(conn: Connection, name: str) -> None:
    q = Queue(name, durable=False, auto_delete=False, expires=60)
    with Publisher(conn, routing_key=q.name, declare=[q]) as pub:
        pub.publish(b"over tls")
    ch = conn.channel()
    delivery = ch.get(q.name)
    assert delivery is not None and delivery.body == b"over tls"
    delivery.ack()
    ch.delete_queue(q.name)


def test_right_ca_verifies_server_and_host_name(
    tls_broker: LocalBroker, pki: Pki, unique_name: str
) -> None:
    with Connection(_tls_url(tls_broker), tls=TlsOptions(ca_file=pki.ca)) as conn:
        assert repr(conn).startswith("<Connection") and "amqps://guest:***@" in repr(conn)
        _roundtrip(conn, unique_name)


def test_ca_file_in_the_url(tls_broker: LocalBroker, pki: Pki, unique_name: str) -> None:
    with Connection(f"{_tls_url(tls_broker)}?cafile={pki.ca}") as conn:
        _roundtrip(conn, unique_name)


def test_wrong_ca_fails_with_a_clear_connect_error(tls_broker: LocalBroker, pki: Pki) -> None:
    conn = Connection(_tls_url(tls_broker), tls=TlsOptions(ca_file=pki.wrong_ca))
    with pytest.raises(ConnectError, match=r"(?i)certificate verify failed") as info:
        conn.open(timeout=30)
    assert not isinstance(info.value, AuthenticationError)
    assert f"localhost:{tls_broker.tls_port}" in str(info.value)
    assert "ca_file" in str(info.value)  # says what to do about it
    assert not conn.is_open


def test_system_trust_store_does_not_trust_a_private_ca(tls_broker: LocalBroker) -> None:
    with pytest.raises(ConnectError, match=r"(?i)certificate verify failed"):
        Connection(_tls_url(tls_broker)).open(timeout=30)


def test_wrong_host_name_fails_with_a_clear_connect_error(
    tls_broker: LocalBroker, pki: Pki
) -> None:
    tls = TlsOptions(ca_file=pki.ca, server_hostname="not-localhost")
    with pytest.raises(ConnectError, match=r"(?i)hostname mismatch|not valid for 'not-localhost'"):
        Connection(_tls_url(tls_broker), tls=tls).open(timeout=30)


def test_client_certificate_is_optional_and_accepted(
    tls_broker: LocalBroker, pki: Pki, unique_name: str
) -> None:
    tls = TlsOptions(ca_file=pki.ca, cert_file=pki.client_cert, key_file=pki.client_key)
    with Connection(_tls_url(tls_broker), tls=tls) as conn:
        _roundtrip(conn, unique_name)


def test_insecure_skip_verify_connects_but_says_so_loudly(
    tls_broker: LocalBroker, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    tls = TlsOptions(
        ca_file=pki.wrong_ca, server_hostname="not-localhost", insecure_skip_verify=True
    )
    with (
        caplog.at_level(logging.WARNING, "hutch"),
        Connection(_tls_url(tls_broker), tls=tls) as conn,
    ):
        assert conn.is_open
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("INSECURE" in m and "insecure_skip_verify=True" in m for m in warnings), warnings


def test_plain_amqp_to_the_tls_port_fails_clearly(tls_broker: LocalBroker) -> None:
    url = _tls_url(tls_broker).replace("amqps://", "amqp://")
    with pytest.raises(ConnectError):
        Connection(url, connect_timeout=3).open(timeout=30)
