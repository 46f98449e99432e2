"""examples/rpc_server.py and examples/rpc_client.py run standalone against a real broker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from hutch import Connection

pytestmark = pytest.mark.rabbitmq_only("runs the RPC examples as separate processes")

EXAMPLES = Path(__file__).parents[2] / "examples"


def test_rpc_examples(amqp_url: str, conn: Connection, unique_name: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "HUTCH_URL"}
    server = subprocess.Popen(
        [sys.executable, str(EXAMPLES / "rpc_server.py"), amqp_url, "--queue", unique_name],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert server.stdout is not None
        ready = server.stdout.readline()
        assert ready.startswith("ready: serving add_point, centroid, divide, fib"), ready
        client = subprocess.run(
            [sys.executable, str(EXAMPLES / "rpc_client.py"), amqp_url, "--queue", unique_name],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        assert client.returncode == 0, client.stdout + client.stderr
        assert client.stdout.splitlines() == [
            "add_point(1, 2) -> Point(x=1, y=2, n=1)",
            "add_point(3, 4) -> Point(x=3, y=4, n=2)",
            "centroid() -> Point(x=2, y=3, n=0)",
            "3 calls in flight -> [(5, 5), (6, 6), (7, 7)], numbered [3, 4, 5]",
            "proxy.divide(1, 4) -> 0.25",
            "divide(1, 0) -> RemoteError ZeroDivisionError: float division by zero",
            "call_raw('30') -> b'832040'",
            "a queue nobody serves -> NoServer, at once",
        ]
        server.send_signal(signal.SIGTERM)  # graceful: run() returns, the script exits 0
        out, err = server.communicate(timeout=30)
        assert server.returncode == 0, out + err
        assert out.strip() == "stopped: 9 calls answered, 1 with an error"
    finally:
        if server.poll() is None:
            server.kill()
            server.communicate(timeout=10)
        conn.channel().delete_queue(unique_name)
