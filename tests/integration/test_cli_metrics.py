"""``hutch worker/serve --metrics-port``: /metrics and /healthz over HTTP, broker up and down.

The commands run as real subprocesses. ``/healthz`` failing while the broker is down is shown
on a RabbitMQ node of this module's own (``fault_broker``), stopped and started again.
"""

from __future__ import annotations

import http.client
import json
import re
import signal
import time
import uuid
from pathlib import Path

import pytest

import hutch
from hutch.testing import LocalBroker
from tests.integration.test_cli import Cli, write_docs_module

pytestmark = [
    pytest.mark.timeout(180),
    pytest.mark.rabbitmq_only("CLI subprocesses and a broker node that is stopped"),
]

# one write per line: print() writes the value and the newline separately, so lines of
# handlers running on several worker threads could interleave ("12" for "1" and "2")
HANDLER = (
    "import sys\n\n\n"
    "def handle(body: dict) -> None:\n"
    "    sys.stdout.write(f\"{body['n']}\\n\")\n"
    "    sys.stdout.flush()\n"
)


def get(port: int, path: str) -> tuple[int, str, str]:
    """GET ``path`` from the metrics server: status, content type, body."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.getheader("Content-Type") or "", response.read().decode()
    finally:
        conn.close()


def wait_health(port: int, status: int, timeout: float) -> dict[str, object]:
    """Poll /healthz until it answers ``status``; its JSON body."""
    deadline = time.monotonic() + timeout
    seen: list[tuple[int, str]] = []
    while time.monotonic() < deadline:
        code, _, body = get(port, "/healthz")
        seen.append((code, body))
        if code == status:
            payload = json.loads(body)
            assert isinstance(payload, dict)
            return payload
        time.sleep(0.2)
    raise AssertionError(f"/healthz never answered {status}; the last answers: {seen[-3:]}")


def metrics_port_of(c: Cli) -> int:
    line = c.wait_for(r"^hutch: metrics on http://")
    match = re.search(r":(\d+)/metrics", line)
    assert match, line
    return int(match.group(1))


def assert_prometheus_text(port: int) -> str:
    code, content_type, body = get(port, "/metrics")
    assert code == 200, body
    # the text exposition format (version 0.0.4, or 1.0.0 from prometheus-client 0.22 on)
    assert re.match(r"text/plain; version=\d", content_type), content_type
    # the exposition format: HELP/TYPE comments, then samples "name{labels} value"
    assert re.search(r"^# TYPE \w+ (counter|gauge|histogram|summary|info)$", body, re.M), body
    assert re.search(r"^\w+(\{[^}]*\})? [-+0-9.eE]+$", body, re.M), body
    return body


def start_worker(tmp_path: Path, url: str, queue: str, *extra: str) -> Cli:
    (tmp_path / "metrics_tasks.py").write_text(HANDLER)
    c = Cli(
        url,
        "worker",
        "metrics_tasks:handle",
        "--queue",
        queue,
        "--metrics-port",
        "0",
        "--metrics-host",
        "127.0.0.1",
        *extra,
        cwd=tmp_path,
    )
    return c


def test_worker_serves_metrics_and_healthz(
    amqp_url: str, conn: hutch.Connection, unique_name: str, tmp_path: Path
) -> None:
    c = start_worker(tmp_path, amqp_url, unique_name)
    try:
        port = metrics_port_of(c)
        c.wait_for(f"consuming queue '{unique_name}'")
        assert wait_health(port, 200, 10) == {
            "healthy": True,
            "checks": {"connection_open": True, "consumers_active": True},
        }
        # the worker does its work while being scraped
        with hutch.Publisher(conn, routing_key=unique_name, mandatory=True) as pub:
            for n in range(3):
                pub.publish({"n": n})
        for _ in range(3):
            c.wait_for(r"^\d$", stream="out")
        assert_prometheus_text(port)
        assert get(port, "/nothing")[0] == 404
        c.proc.send_signal(signal.SIGTERM)
        assert c.finish() == 0, c.err
        assert any("worker stopped: 3 processed" in line for line in c.err), c.err
        # the port is released with the command
        with pytest.raises(OSError):
            get(port, "/healthz")
    finally:
        c.close()
        ch = conn.channel()
        ch.delete_queue(unique_name)
        ch.delete_queue(f"{unique_name}.dead")


def test_healthz_fails_while_the_broker_is_down(
    fault_broker: LocalBroker, tmp_path: Path, unique_name: str
) -> None:
    c = start_worker(tmp_path, fault_broker.url, unique_name, "-v")
    try:
        port = metrics_port_of(c)
        c.wait_for(f"consuming queue '{unique_name}'")
        wait_health(port, 200, 10)
        assert_prometheus_text(port)

        fault_broker.stop()
        down = wait_health(port, 503, 20)
        assert down == {
            "healthy": False,
            "checks": {"connection_open": False, "consumers_active": True},
        }
        # the metrics stay available while the broker is away: that is when they matter
        assert_prometheus_text(port)
        time.sleep(1)
        assert get(port, "/healthz")[0] == 503
        assert c.proc.poll() is None, c.err

        fault_broker.start()
        assert wait_health(port, 200, 60)["healthy"] is True
        # and it consumes again: a message published now is handled
        with (
            hutch.Connection(fault_broker.url) as pc,
            hutch.Publisher(pc, routing_key=unique_name, mandatory=True) as pub,
        ):
            pub.publish({"n": 7})
        c.wait_for(r"^7$", stream="out", timeout=30)
        c.proc.send_signal(signal.SIGTERM)
        assert c.finish(30) == 0, c.err
    finally:
        c.close()


def test_serve_answers_healthz(amqp_url: str, tmp_path: Path) -> None:
    write_docs_module(tmp_path, "myapp/rpc.py")
    module = tmp_path / "myapp" / "rpc.py"
    queue = f"cli-metrics-{uuid.uuid4().hex[:8]}"
    module.write_text(
        module.read_text().replace(
            "hutch.RpcServer()",
            f"hutch.RpcServer(queue=hutch.Queue({queue!r}, durable=False, auto_delete=True))",
        )
    )
    c = Cli(amqp_url, "serve", "myapp.rpc:server", "--metrics-port", "0", cwd=tmp_path)
    try:
        port = metrics_port_of(c)
        c.wait_for(f"serving .* on queue '{queue}'")
        assert wait_health(port, 200, 10) == {
            "healthy": True,
            "checks": {"connection_open": True, "consumers_active": True},
        }
        assert_prometheus_text(port)
        c.proc.send_signal(signal.SIGTERM)
        assert c.finish() == 0, c.err
    finally:
        c.close()
