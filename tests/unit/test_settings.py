from __future__ import annotations

import random
import ssl

import pytest

from hutch import Address, Connection, ConnectionSettings, RecoveryPolicy, TlsOptions


def test_defaults_from_plain_url() -> None:
    s = ConnectionSettings.from_url("amqp://localhost")
    assert s.addresses == (Address(host="localhost", port=5672),)
    assert s.username == "guest"
    assert s.password.get_secret_value() == "guest"
    assert s.vhost == "/"
    assert s.tls is None


def test_full_url() -> None:
    s = ConnectionSettings.from_url(
        "amqp://alice:p%40ss@rabbit:5673/prod%2Feu?heartbeat=7&connection_name=svc&connect_timeout=2.5"
    )
    assert s.username == "alice"
    assert s.password.get_secret_value() == "p@ss"
    assert s.addresses[0] == Address(host="rabbit", port=5673)
    assert s.vhost == "prod/eu"
    assert s.heartbeat == 7
    assert s.connection_name == "svc"
    assert s.connect_timeout == 2.5


def test_encoded_default_vhost() -> None:
    assert ConnectionSettings.from_url("amqp://h/%2F").vhost == "/"
    assert ConnectionSettings.from_url("amqp://h/").vhost == "/"
    assert ConnectionSettings.from_url("amqp://h/dev").vhost == "dev"


def test_cluster_hosts_in_one_url_and_as_list() -> None:
    s = ConnectionSettings.from_url("amqp://u:p@h1,h2:5673,[::1]:5674/v")
    assert [str(a) for a in s.addresses] == ["h1:5672", "h2:5673", "[::1]:5674"]
    s2 = ConnectionSettings.from_url(["amqp://u:p@n1:1/v", "amqp://u:p@n2:2/v"])
    assert [a.port for a in s2.addresses] == [1, 2]
    assert s2.username == "u"


def test_amqps_defaults_to_5671_and_verifies() -> None:
    s = ConnectionSettings.from_url("amqps://u:p@secure/?server_hostname=rabbit.local")
    assert s.addresses[0].port == 5671
    assert s.tls is not None
    assert s.tls.server_hostname == "rabbit.local"
    ctx = s.tls.ssl_context()
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    assert ctx.check_hostname


def test_insecure_needs_explicit_option() -> None:
    ctx = TlsOptions(insecure_skip_verify=True).ssl_context()
    assert ctx.verify_mode == ssl.CERT_NONE


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://h", "unsupported URL scheme"),
        ("amqp://h?heartbeat=abc", "not a number"),
        ("amqp://h?bogus=1", "unknown URL option"),
        ("amqp://h?cafile=/x", "needs an amqps:// URL"),
        ("amqp://h:99999", "less than or equal to 65535"),
    ],
)
def test_bad_urls_fail_clearly(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ConnectionSettings.from_url(url)


def test_mixing_schemes_is_refused() -> None:
    with pytest.raises(ValueError, match="mixing"):
        ConnectionSettings.from_url(["amqp://a", "amqps://b"])


def test_url_type_checked() -> None:
    with pytest.raises(TypeError):
        ConnectionSettings.from_url(42)  # type: ignore[arg-type]


def test_password_never_in_repr_or_str() -> None:
    s = ConnectionSettings.from_url("amqp://bob:s3cr3t-pw@h/")
    for text in (repr(s), str(s), s.url_for(s.addresses[0]), repr(Connection(settings=s))):
        assert "s3cr3t-pw" not in text
        assert "***" in text


def test_settings_are_frozen() -> None:
    s = ConnectionSettings.from_url("amqp://h/")
    with pytest.raises(ValueError, match="frozen"):
        s.heartbeat = 3


def test_overrides_win_over_url() -> None:
    s = ConnectionSettings.from_url("amqp://h/?heartbeat=5", heartbeat=9, connection_name="x")
    assert (s.heartbeat, s.connection_name) == (9, "x")
    with pytest.raises(ValueError):
        ConnectionSettings.from_url("amqp://h/", heartbeat=-1)


def test_connection_constructor_does_no_io_and_validates() -> None:
    conn = Connection("amqp://nowhere.invalid:1/")
    assert not conn.is_open
    with pytest.raises(TypeError):
        Connection("amqp://h/", settings=ConnectionSettings.from_url("amqp://h/"))
    with pytest.raises(ValueError):
        Connection("amqp://h/", no_such_option=1)


def test_recovery_delays_grow_with_jitter_and_stop() -> None:
    policy = RecoveryPolicy(initial_delay=1, max_delay=8, multiplier=2, jitter=0.1, max_attempts=6)
    delays = list(policy.delays(random.Random(1)))
    assert len(delays) == 6
    bases = [1, 2, 4, 8, 8, 8]
    for d, base in zip(delays, bases, strict=True):
        assert base * 0.9 <= d <= base * 1.1
    unlimited = RecoveryPolicy(max_attempts=None).delays()
    assert len([next(unlimited) for _ in range(100)]) == 100
