"""Unit tests of the test-broker provider that need no RabbitMQ."""

from __future__ import annotations

import json
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from hutch.testing import (
    Broker,
    BrokerControlError,
    BrokerError,
    BrokerStartError,
    BrokerUnavailable,
    ExternalBroker,
    LocalBroker,
    LocalCluster,
    TlsFiles,
    _base,
    _container,
    _util,
    acquire_broker,
)

# Captured from `rabbitmqctl list_connections ...` on RabbitMQ 3.10.8.
JSON_LISTING = json.dumps(
    [
        {
            "name": "127.0.0.1:40998 -> 127.0.0.1:45999",
            "client_properties": [
                ["product", "longstr", "Pika Python Client Library"],
                ["capabilities", "table", [["basic.nack", "bool", True]]],
            ],
        },
        {
            "name": "127.0.0.1:41000 -> 127.0.0.1:45999",
            "client_properties": [
                ["product", "longstr", "Pika Python Client Library"],
                ["connection_name", "longstr", 'worker-1 "wé"'],
            ],
        },
        {
            "name": "127.0.0.1:41002 -> 127.0.0.1:45999",
            "client_properties": [["connection_name", "longstr", "publisher-7"]],
        },
    ]
)
CSV_LISTING = (
    '"pid","name"\n'
    '"<hutch-x@localhost.1795736131.685.0>","127.0.0.1:40998 -> 127.0.0.1:45999"\n'
    '"<hutch-x@localhost.1795736131.693.0>","127.0.0.1:41000 -> 127.0.0.1:45999"\n'
    '"<hutch-x@localhost.1795736131.701.0>","127.0.0.1:41002 -> 127.0.0.1:45999"\n'
)


class FakeBroker(Broker):
    """Answers rabbitmqctl from canned output and records the commands."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []
        self.closed = False
        self.eval_answer: str | None = None  # None: eval refused

    @property
    def url(self) -> str:
        return "amqp://guest:guest@127.0.0.1:1/%2F"

    def rabbitmqctl(self, *args: str, timeout: float = 30.0) -> str:
        self.calls.append(args)
        if args[0] == "list_connections":
            return JSON_LISTING if "json" in args else CSV_LISTING
        if args[0] == "close_connection":
            return ""
        if args[0] == "eval" and self.eval_answer is not None:
            return self.eval_answer
        raise BrokerControlError("unexpected", command=args, returncode=64, stderr="no")

    def stop(self) -> None:
        self.calls.append(("<stop>",))

    def start(self) -> None:
        self.calls.append(("<start>",))

    def close(self) -> None:
        self.closed = True


def closed_pids(broker: FakeBroker) -> list[str]:
    return [call[1] for call in broker.calls if call[0] == "close_connection"]


def test_list_connection_names_skips_unnamed() -> None:
    assert FakeBroker().list_connection_names() == ['worker-1 "wé"', "publisher-7"]


def test_close_connections_by_name_fragment() -> None:
    broker = FakeBroker()
    assert broker.close_connections("worker", reason="chaos") == 1
    assert closed_pids(broker) == ["<hutch-x@localhost.1795736131.693.0>"]
    assert broker.calls[-1] == ("close_connection", "<hutch-x@localhost.1795736131.693.0>", "chaos")


def test_close_connections_all() -> None:
    broker = FakeBroker()
    assert broker.close_connections() == 3
    assert len(closed_pids(broker)) == 3


def test_close_connections_no_match_lists_once_after_eval_is_refused() -> None:
    broker = FakeBroker()  # refuses `rabbitmqctl eval`, as a locked-down broker may
    assert broker.close_connections("nobody") == 0
    assert [call[0] for call in broker.calls] == ["eval", "list_connections"]


def test_close_connections_takes_the_count_from_one_eval() -> None:
    broker = FakeBroker()
    broker.eval_answer = "2\n"
    assert broker.close_connections("worker") == 2
    assert [call[0] for call in broker.calls] == ["eval"]


def test_the_eval_carries_name_and_reason_as_utf8_bytes() -> None:
    # no quoting to get wrong: a name with quotes, a backslash or any character is bytes
    text = _base.close_connections_erlang('wé"\\', "chaos")
    assert "Sub = <<119,195,169,34,92>>" in text
    assert "Why = unicode:characters_to_list(<<99,104,97,111,115>>)" in text
    assert "All = false" in text
    assert "All = true" in _base.close_connections_erlang(None, "x")


def test_restart_is_stop_then_start_and_context_manager_closes() -> None:
    with FakeBroker() as broker:
        broker.restart()
    assert broker.calls == [("<stop>",), ("<start>",)]
    assert broker.closed


def test_control_error_carries_context() -> None:
    with pytest.raises(BrokerControlError) as info:
        FakeBroker().rabbitmqctl("bogus")
    assert info.value.returncode == 64
    assert info.value.command == ("bogus",)
    assert "no" in str(info.value)


def test_start_error_carries_log_tail() -> None:
    error = BrokerStartError("boom", log_tail="line 1\nline 2")
    assert error.log_tail == "line 1\nline 2"
    assert "line 2" in str(error)


def test_redact_hides_password_only() -> None:
    assert _util.redact("amqp://u:pw@h:1/%2F") == "amqp://u:***@h:1/%2F"
    assert _util.redact("amqp://h:1/%2F") == "amqp://h:1/%2F"


def test_external_broker_refuses_control_without_leaking_password() -> None:
    broker = ExternalBroker("amqps://user:s3cret@example.invalid:5671/vh")
    assert broker.supports_control is False
    assert "s3cret" not in repr(broker)
    for action in (
        broker.stop,
        broker.start,
        broker.restart,
        broker.close_connections,
        broker.list_connection_names,
        lambda: broker.rabbitmqctl("status"),
    ):
        with pytest.raises(BrokerControlError, match="not started by hutch") as info:
            action()
        assert "s3cret" not in str(info.value)
    broker.close()
    broker.close()


def test_external_broker_rejects_other_schemes() -> None:
    with pytest.raises(ValueError, match="not an AMQP URL"):
        ExternalBroker("http://localhost")


def test_local_broker_constructor_does_no_io(tmp_path: Path) -> None:
    broker = LocalBroker(base_dir=str(tmp_path / "never"))
    assert broker.node_name.startswith("hutch-")
    assert broker.node_name.endswith("@localhost")
    assert not broker.is_running
    assert broker.tls_port is None
    assert broker.tls_url is None
    with pytest.raises(BrokerError):
        _ = broker.url
    with pytest.raises(BrokerError):
        _ = broker.log_path
    with pytest.raises(BrokerControlError):
        broker.rabbitmqctl("status")
    assert not (tmp_path / "never").exists()
    broker.close()
    broker.close()
    with pytest.raises(BrokerError, match="closed"):
        broker.start()


def test_local_broker_fixed_port_and_short_node_name() -> None:
    broker = LocalBroker(node_name="n1", amqp_port=15999)
    assert broker.node_name == "n1@localhost"
    assert broker.url == "amqp://guest:guest@127.0.0.1:15999/%2F"


@pytest.mark.parametrize(
    "kwargs",
    [{"amqp_port": 0}, {"dist_port": 70000}, {"startup_timeout": 0}, {"erlang_cookie": "a b"}],
)
def test_local_broker_validates_arguments(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        LocalBroker(**kwargs)  # type: ignore[arg-type]


def test_local_cluster_validates_and_shares_cookie() -> None:
    with pytest.raises(ValueError, match="size"):
        LocalCluster(0)
    cluster = LocalCluster(3, erlang_cookie="COOKIE")
    assert len(cluster.nodes) == 3
    assert len(set(cluster.node_names)) == 3
    assert {node._cookie for node in cluster.nodes} == {"COOKIE"}


def test_tls_files_is_frozen() -> None:
    files = TlsFiles(ca_cert="ca", server_cert="cert", server_key="key")
    with pytest.raises(AttributeError):
        files.ca_cert = "other"  # type: ignore[misc]


def test_picked_ports_are_free_distinct_and_not_ephemeral() -> None:
    low, high = _util.ephemeral_range()
    ports = [_util.pick_port() for _ in range(20)]
    assert len(set(ports)) == 20
    for port in ports:
        assert not low <= port <= high
        assert port not in _util.RESERVED_PORTS


@pytest.fixture
def listening_port() -> Iterator[int]:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield server.getsockname()[1]


def test_acquire_broker_prefers_the_url(
    monkeypatch: pytest.MonkeyPatch, listening_port: int
) -> None:
    monkeypatch.setenv("HUTCH_TEST_AMQP_URL", f"amqp://u:p@127.0.0.1:{listening_port}/%2F")
    broker = acquire_broker()
    assert isinstance(broker, ExternalBroker)
    assert broker.url.endswith(f":{listening_port}/%2F")


def test_acquire_broker_fails_loudly_on_dead_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUTCH_TEST_AMQP_URL", "amqp://u:pw@127.0.0.1:1/%2F")
    with pytest.raises(BrokerUnavailable, match="does not accept") as info:
        acquire_broker()
    assert "pw@" not in str(info.value)


def test_acquire_broker_rejects_unknown_kind(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HUTCH_TEST_AMQP_URL", raising=False)
    monkeypatch.setenv("HUTCH_TEST_BROKER", "podman")
    with pytest.raises(ValueError, match="HUTCH_TEST_BROKER"):
        acquire_broker()


def test_acquire_broker_explains_how_to_get_a_broker(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("HUTCH_TEST_AMQP_URL", raising=False)
    monkeypatch.setenv("HUTCH_TEST_BROKER", "local")
    monkeypatch.setenv("HUTCH_RABBITMQ_BIN_DIR", str(tmp_path))  # no rabbitmq-server there
    with pytest.raises(BrokerUnavailable) as info:
        acquire_broker()
    message = str(info.value)
    assert "HUTCH_TEST_AMQP_URL" in message
    assert "Docker" in message
    assert "apt-get install rabbitmq-server" in message


def test_docker_required_but_absent(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("HUTCH_TEST_AMQP_URL", raising=False)
    monkeypatch.setenv("HUTCH_TEST_BROKER", "docker")
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path / 'no.sock'}")
    with pytest.raises(BrokerUnavailable, match="Docker"):
        acquire_broker()


def test_unix_socket_ping(tmp_path: Path) -> None:
    path = str(tmp_path / "docker.sock")
    replies = [b"HTTP/1.1 200 OK\r\nApi-Version: 1.45\r\n\r\nOK", b"HTTP/1.1 500 Oops\r\n\r\n"]
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(path)
        server.listen()

        def serve() -> None:
            for reply in replies:
                conn, _ = server.accept()
                with conn:
                    conn.recv(256)
                    conn.sendall(reply)

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        assert _container._unix_socket_ping(path, 3.0) is True
        assert _container._unix_socket_ping(path, 3.0) is False
        thread.join(5)
    assert _container._unix_socket_ping(os.path.join(str(tmp_path), "absent.sock"), 3.0) is False
