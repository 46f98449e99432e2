"""One signal behaviour for every blocking run(): real processes, real signals.

A script (``signal_script.py``) runs a Subscriber, a WorkerPool or an RpcServer against
the broker with a slow handler; the test sends SIGTERM or SIGINT while the handler is in
hand and counts the queue afterwards.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hutch import Connection, HutchError, Publisher, Queue, RpcClient
from tests.integration import signal_script
from tests.waits import wait_for

SCRIPT = Path(signal_script.__file__)
ROOT = SCRIPT.parents[2]
KINDS = ("subscriber", "pool", "rpc")

pytestmark = [
    pytest.mark.timeout(90),
    pytest.mark.rabbitmq_only(
        "real processes receiving signals: the broker must be shared across processes"
    ),
]


def events(log: Path, kind: str) -> list[float]:
    try:
        text = log.read_text()
    except FileNotFoundError:
        return []
    return [float(p[2]) for p in (line.split() for line in text.splitlines()) if p[0] == kind]


@pytest.fixture
def queue_name(conn: Connection, unique_name: str) -> Iterator[str]:
    yield unique_name
    ch = conn.channel()
    ch.delete_queue(unique_name)
    ch.delete_queue(f"{unique_name}.dead")
    ch.close()


class Run:
    """The script's process and, for an RPC server, the call in flight."""

    def __init__(self, kind: str, url: str, queue: str, seconds: float, log: Path) -> None:
        self.kind, self.url, self.queue, self.log = kind, url, queue, log
        self.proc = subprocess.Popen(
            [sys.executable, str(SCRIPT), kind, url, queue, str(seconds)],
            env={**os.environ, "HUTCH_TEST_LOG": str(log)},
            cwd=str(ROOT),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.reply: list[object] = []
        self.caller: threading.Thread | None = None
        self.client: RpcClient | None = None

    def send_one(self) -> None:
        """One message (one call for the RPC server), once the script is ready."""
        wait_for(lambda: bool(events(self.log, "ready")), 30, "the script to be ready")
        if self.kind == "rpc":
            client = RpcClient(self.url, queue=self.queue, timeout=30)
            self.client = client

            def call() -> None:
                # a call the killed server never answers ends when kill() closes the
                # client: its error is recorded, never raised in a thread outliving the test
                with client:
                    try:
                        self.reply.append(client.call("work", "job"))
                    except HutchError as exc:
                        self.reply.append(exc)

            self.caller = threading.Thread(target=call, name="test-rpc-caller", daemon=True)
            self.caller.start()
        else:
            with Publisher(self.url, model=str) as pub:
                pub.publish("job", routing_key=self.queue)
        wait_for(lambda: bool(events(self.log, "start")), 30, "the handler to start")

    def finish(self, timeout: float) -> tuple[int, str, str]:
        out, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, out.decode(), err.decode()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate(timeout=10)
        if self.client is not None and self.caller is not None:
            if self.proc.returncode == 0:
                self.caller.join(10)  # the server answered before it exited
            self.client.close()
            self.caller.join(10)
            assert not self.caller.is_alive()


def ready_count(conn: Connection, queue: str) -> int:
    ch = conn.channel()
    try:
        return ch.message_count(queue)
    finally:
        ch.close()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_first_signal_finishes_the_work_in_hand_and_run_returns(
    kind: str, sig: signal.Signals, amqp_url: str, conn: Connection, queue_name: str, tmp_path: Path
) -> None:
    conn.channel().declare([Queue(queue_name, expires=120, durable=kind != "rpc")])
    log = tmp_path / "events.log"
    run = Run(kind, amqp_url, queue_name, 2.0, log)
    try:
        run.send_one()
        sent_at = time.time()
        run.proc.send_signal(sig)
        rc, out, err = run.finish(30)
    finally:
        run.kill()
    assert rc == 0, err
    assert "returned" in out  # run() returned normally: no traceback, no KeyboardInterrupt
    assert "Traceback" not in err
    done = events(log, "done")
    assert len(done) == 1 and done[0] > sent_at  # the handler in hand finished
    assert len(events(log, "start")) == 1
    # acked before exit: nothing comes back to the queue once the connection is gone
    time.sleep(0.3)
    assert ready_count(conn, queue_name) == 0
    if kind == "rpc":
        assert run.caller is not None
        run.caller.join(10)
        assert run.reply == ["job"]  # and answered


@pytest.mark.parametrize("kind", KINDS)
def test_a_second_sigint_aborts_with_keyboard_interrupt(
    kind: str, amqp_url: str, conn: Connection, queue_name: str, tmp_path: Path
) -> None:
    conn.channel().declare([Queue(queue_name, expires=120, durable=kind != "rpc")])
    log = tmp_path / "events.log"
    run = Run(kind, amqp_url, queue_name, 6.0, log)
    try:
        run.send_one()
        first = time.monotonic()
        run.proc.send_signal(signal.SIGINT)
        time.sleep(0.3)
        run.proc.send_signal(signal.SIGINT)
        rc, out, err = run.finish(30)
        took = time.monotonic() - first
    finally:
        run.kill()
    # Python ends a process on an uncaught KeyboardInterrupt by SIGINT: a shell shows 130
    assert rc == -signal.SIGINT, (rc, err)
    assert "KeyboardInterrupt" in err
    assert "returned" not in out
    assert took < 4.0  # well before the 6 s handler could have finished
    assert events(log, "done") == []
    # not acked: the broker puts the message back once the process's connection is gone
    wait_for(lambda: ready_count(conn, queue_name) == 1, 10, "the message to be requeued")
