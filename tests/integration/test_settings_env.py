"""``hutch.connect()`` without a URL connects to the broker named by ``HUTCH_URL``."""

from __future__ import annotations

import pytest

import hutch

pytestmark = pytest.mark.timeout(60)


def test_connect_reads_hutch_url(
    monkeypatch: pytest.MonkeyPatch, amqp_url: str, conn: hutch.Connection, unique_name: str
) -> None:
    monkeypatch.setenv("HUTCH_URL", amqp_url)
    monkeypatch.setenv("HUTCH_CONNECTION_NAME", "from-the-environment")
    broker = hutch.ConnectionSettings.from_url(amqp_url).addresses[0]
    with hutch.connect() as env_conn:
        assert env_conn.name == "from-the-environment"
        assert env_conn.io.connected_address == broker
        # it is that broker: what this connection declares, the test's own connection sees
        ch = env_conn.channel()
        ch.declare([hutch.Queue(unique_name, durable=False, auto_delete=False)])
        ch.close()
    other = conn.channel()
    try:
        assert other.message_count(unique_name) == 0  # a passive declare: it exists
    finally:
        other.delete_queue(unique_name)
        other.close()
