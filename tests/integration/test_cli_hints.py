"""Issue 12's CLI rows against a real broker: declare --check, hints, logging, a second Ctrl-C."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import hutch
from hutch._cli import main
from tests.integration.test_cli import SUBPROCESS, Cli, one_error_line, run
from tests.integration.test_cli import cli as cli

pytestmark = pytest.mark.timeout(90)

ROOT = Path(__file__).resolve().parents[2]


def _exists(conn: hutch.Connection, kind: str, name: str) -> bool:
    ch = conn.channel()
    try:
        return ch.exists(kind, name)
    finally:
        ch.close()


# --------------------------------------------------------------------------- declare


def _write(path: Path, n: str, ttl: int, *, with_exchanges: bool = True) -> None:
    exchanges = (
        f"""
[[exchanges]]
name = "{n}.a"
auto_delete = true

[[exchanges]]
name = "{n}.b"
type = "topic"
auto_delete = true
"""
        if with_exchanges
        else ""
    )
    path.write_text(
        exchanges
        + f"""
[[queues]]
name = "{n}.q"
durable = false
expires = 60
message_ttl = {ttl}
"""
    )


def test_a_conflict_leaves_nothing_half_applied(
    capsys: pytest.CaptureFixture[str],
    amqp_url: str,
    conn: hutch.Connection,
    unique_name: str,
    tmp_path: Path,
) -> None:
    n = unique_name
    path = tmp_path / "topology.toml"
    _write(path, n, 10, with_exchanges=False)
    assert run(capsys, amqp_url, "declare", str(path))[0] == 0  # the queue, ttl 10 s
    try:
        _write(path, n, 20)  # two new exchanges, and the queue with another ttl
        code, out, err = run(capsys, amqp_url, "declare", str(path))
        assert code == 1
        line = one_error_line(err)
        assert "nothing was declared" in line
        assert "declare it first" not in out + err  # no circular hint
        assert (out + err).count("inequivalent arg 'x-message-ttl'") == 1  # the 406 text once
        assert f"differs queue '{n}.q'" in out
        assert not out.startswith("declared") and "declared exchange" not in out
        # nothing of the file was declared: the exchanges do not exist
        assert not _exists(conn, "exchange", f"{n}.a")
        assert not _exists(conn, "exchange", f"{n}.b")
    finally:
        ch = conn.channel()
        ch.delete_queue(f"{n}.q")
        ch.close()


def test_check_reports_every_difference_and_changes_nothing(
    capsys: pytest.CaptureFixture[str],
    amqp_url: str,
    conn: hutch.Connection,
    unique_name: str,
    tmp_path: Path,
) -> None:
    n = unique_name
    path = tmp_path / "topology.toml"
    _write(path, n, 10, with_exchanges=False)
    assert run(capsys, amqp_url, "declare", str(path))[0] == 0
    try:
        # all there with the same settings: exit 0
        code, out, _ = run(capsys, amqp_url, "declare", str(path), "--check")
        assert (code, out.splitlines()) == (
            0,
            [f"same queue '{n}.q' (transient, x-message-ttl=10000, x-expires=60000)"],
        )
        _write(path, n, 20)
        path.write_text(
            path.read_text()
            + f'\n[[bindings]]\nexchange = "{n}.a"\nqueue = "{n}.q"\nrouting_key = "k"\n'
        )
        code, out, err = run(capsys, amqp_url, "declare", str(path), "--check")
        assert code == 1
        assert "4 of 4 entities differ" in one_error_line(err)
        statuses = [line.split(" ", 1)[0] for line in out.splitlines()]
        assert statuses == ["missing", "missing", "differs", "missing"], out
        assert "x-message-ttl" in out.splitlines()[2]
        # --check changed nothing: no exchange, the queue keeps its ttl
        assert not _exists(conn, "exchange", f"{n}.a")
        _write(path, n, 10, with_exchanges=False)
        assert run(capsys, amqp_url, "declare", str(path), "--check")[0] == 0
    finally:
        ch = conn.channel()
        ch.delete_queue(f"{n}.q")
        ch.close()


def test_a_binding_to_nothing_is_refused_before_anything_is_declared(
    capsys: pytest.CaptureFixture[str],
    amqp_url: str,
    conn: hutch.Connection,
    unique_name: str,
    tmp_path: Path,
) -> None:
    n = unique_name
    path = tmp_path / "topology.toml"
    _write(path, n, 10)
    path.write_text(
        path.read_text()
        + f'\n[[bindings]]\nexchange = "{n}.nowhere"\nqueue = "{n}.q"\nrouting_key = "k"\n'
    )
    code, out, err = run(capsys, amqp_url, "declare", str(path))
    assert code == 1, err
    assert f"exchange '{n}.nowhere' and queue '{n}.q' missing" in out
    assert out.startswith("missing binding") and len(out.splitlines()) == 1  # the only problem
    assert not _exists(conn, "exchange", f"{n}.a")
    assert not _exists(conn, "queue", f"{n}.q")


# --------------------------------------------------------------------------- hints


def test_consume_of_a_queue_name_suggests_queue(
    capsys: pytest.CaptureFixture[str], amqp_url: str, conn: hutch.Connection, unique_name: str
) -> None:
    ch = conn.channel()
    ch.declare([hutch.Queue(unique_name, durable=False, expires=60)])
    try:
        code, _, err = run(capsys, amqp_url, "consume", unique_name, "--json", "--count", "1")
        assert code == 2
        assert f"did you mean --queue {unique_name}?" in one_error_line(err)
    finally:
        ch.delete_queue(unique_name)
        ch.close()
    # neither an exchange nor a queue: the plain 404
    code, _, err = run(capsys, amqp_url, "consume", unique_name, "--count", "1")
    assert code == 1
    line = one_error_line(err)
    assert f"no exchange '{unique_name}'" in line and "--queue" not in line


def test_publish_warns_about_broken_json(
    capsys: pytest.CaptureFixture[str], amqp_url: str, conn: hutch.Connection, unique_name: str
) -> None:
    ch = conn.channel()
    ch.declare([hutch.Queue(unique_name, durable=False, expires=60)])
    try:
        code, _, err = run(capsys, amqp_url, "publish", "", unique_name, '{"id": 1,')
        assert code == 0
        (warning,) = [line for line in err.splitlines() if "warning" in line]
        assert "looks like JSON but is not valid JSON" in warning and "line 1 column 10" in warning
        for fine in ['{"id": 1}', "plain words"]:
            code, _, err = run(capsys, amqp_url, "publish", "", unique_name, fine)
            assert code == 0 and "warning" not in err
        code, _, err = run(capsys, amqp_url, "publish", "", unique_name, "[1,", "--json")
        assert code == 2  # --json refuses it
        with hutch.Subscriber(conn, queue=unique_name, model=bytes) as sub:
            got = [
                (m.body, (m.content_type or "").split(";")[0]) for m in sub.messages(timeout=0.5)
            ]
        assert got == [
            (b'{"id": 1,', "text/plain"),
            (b'{"id": 1}', "application/json"),
            (b"plain words", "text/plain"),
        ]
    finally:
        ch.delete_queue(unique_name)
        ch.close()


def test_call_with_a_bare_word_says_how_to_quote_it(
    capsys: pytest.CaptureFixture[str], amqp_url: str
) -> None:
    code, _, err = run(capsys, amqp_url, "call", "greet", "Ada")
    assert code == 2
    assert """write '"Ada"'""" in one_error_line(err)


@pytest.fixture
def http_port() -> Iterator[int]:
    """A port that answers like an HTTP server (the management UI's): 400 and hang up."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                peer, _ = server.accept()
            except OSError:
                continue
            with peer:
                peer.settimeout(2)
                try:
                    peer.recv(64)
                    peer.sendall(b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\n\r\n")
                except OSError:
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    # wakes the accept at once, instead of at its next 0.2 s timeout
    socket.create_connection(server.getsockname(), timeout=2).close()
    thread.join(5)
    server.close()


def test_a_port_that_does_not_speak_amqp_is_one_clear_line(
    capsys: pytest.CaptureFixture[str], http_port: int
) -> None:
    code, _, err = run(
        capsys, f"amqp://guest:guest@127.0.0.1:{http_port}/", "publish", "amq.topic", "k", "x"
    )
    assert code == 1
    line = one_error_line(err)
    assert f"127.0.0.1:{http_port}: this port does not speak AMQP" in line
    assert "StreamLostError" not in line and "IncompatibleProtocolError" not in line


def test_a_worker_module_whose_import_fails_names_the_line(
    capsys: pytest.CaptureFixture[str],
    amqp_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    module = f"w12_broken_{os.getpid()}"
    (tmp_path / f"{module}.py").write_text("import os\nimport no_such_dependency_w12\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    code, _, err = run(capsys, amqp_url, "worker", f"{module}:handle", "--queue", "unused")
    assert code == 2
    line = one_error_line(err)
    assert f"{module}.py:2: import no_such_dependency_w12" in line
    assert "No module named 'no_such_dependency_w12'" in line
    assert "working directory" not in line
    sys.modules.pop(module, None)


@SUBPROCESS
def test_publish_raw_from_a_file_on_stdin(
    amqp_url: str, conn: hutch.Connection, unique_name: str, tmp_path: Path
) -> None:
    payload = bytes(range(256)) * 4
    (tmp_path / "report.pdf").write_bytes(payload)
    ch = conn.channel()
    ch.declare([hutch.Queue(unique_name, durable=False, expires=60)])
    env = {**os.environ, "HUTCH_URL": amqp_url}
    try:
        with open(tmp_path / "report.pdf", "rb") as stdin:
            done = subprocess.run(
                [sys.executable, "-m", "hutch", "publish", "", unique_name, "--raw"],
                stdin=stdin,
                capture_output=True,
                env=env,
                timeout=60,
            )
        assert done.returncode == 0, done.stderr
        # a BODY as well as a file on stdin: refused, nothing sent
        with open(tmp_path / "report.pdf", "rb") as stdin:
            done = subprocess.run(
                [sys.executable, "-m", "hutch", "publish", "", unique_name, "report.pdf", "--raw"],
                stdin=stdin,
                capture_output=True,
                env=env,
                timeout=60,
            )
        assert done.returncode == 2
        assert b"stdin is a file" in done.stderr
        with hutch.Subscriber(conn, queue=unique_name, model=bytes) as sub:
            assert [m.body for m in sub.messages(timeout=0.5)] == [payload]
    finally:
        ch.delete_queue(unique_name)
        ch.close()


# --------------------------------------------------------------------------- worker runs


SLOW_MODULE = """
import time


def handle(body: dict) -> None:
    print(f"start {body['n']}", flush=True)
    time.sleep(body.get("sleep", 0))
    print(f"done {body['n']}", flush=True)
"""


@pytest.fixture
def slow_module(tmp_path: Path) -> Path:
    (tmp_path / "slowtasks.py").write_text(SLOW_MODULE)
    return tmp_path


def _cleanup(conn: hutch.Connection, queue: str) -> None:
    ch = conn.channel()
    ch.delete_queue(queue)
    ch.delete_queue(f"{queue}.dead")
    ch.close()


@SUBPROCESS
def test_worker_logs_timestamps_and_a_line_per_task(
    cli: list[Cli], amqp_url: str, conn: hutch.Connection, unique_name: str, slow_module: Path
) -> None:
    c = Cli(amqp_url, "-v", "worker", "slowtasks:handle", "--queue", unique_name, cwd=slow_module)
    cli.append(c)
    try:
        c.wait_for(f"consuming queue '{unique_name}' with 4 threads")  # WorkerPool's default
        with hutch.Publisher(conn, routing_key=unique_name, mandatory=True) as pub:
            pub.publish({"n": 1}, message_id="task-one")
        line = c.wait_for("task task-one")
        # 2026-01-31 12:00:00,123 INFO hutch.task: task task-one on 'q': ok in 0.001 s ...
        assert re.match(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO hutch\.task: ", line), line
        assert f"on '{unique_name}': ok in " in line
        c.proc.send_signal(signal.SIGTERM)
        assert c.finish() == 0, c.err
    finally:
        _cleanup(conn, unique_name)


@SUBPROCESS
def test_worker_logs_json(
    cli: list[Cli], amqp_url: str, conn: hutch.Connection, unique_name: str, slow_module: Path
) -> None:
    c = Cli(
        amqp_url,
        "worker",
        "slowtasks:handle",
        "--queue",
        unique_name,
        "-v",
        "--log-format",
        "json",
        cwd=slow_module,
    )
    cli.append(c)
    try:
        c.wait_for("consuming queue")
        with hutch.Publisher(conn, routing_key=unique_name, mandatory=True) as pub:
            pub.publish({"n": 1}, message_id="json-task")
        line = c.wait_for('"logger": "hutch.task"')
        entry = json.loads(line)
        assert entry["level"] == "INFO" and "json-task" in entry["message"]
        assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", entry["time"])
        c.proc.send_signal(signal.SIGTERM)
        assert c.finish() == 0, c.err
        for logged in c.err:
            if logged.startswith("{"):
                json.loads(logged)  # every log line is one JSON object
    finally:
        _cleanup(conn, unique_name)


@SUBPROCESS
def test_a_second_ctrl_c_on_worker_exits_130(
    cli: list[Cli], amqp_url: str, conn: hutch.Connection, unique_name: str, slow_module: Path
) -> None:
    c = Cli(amqp_url, "worker", "slowtasks:handle", "--queue", unique_name, cwd=slow_module)
    cli.append(c)
    try:
        c.wait_for("consuming queue")
        with hutch.Publisher(conn, routing_key=unique_name, mandatory=True) as pub:
            pub.publish({"n": 1, "sleep": 12})
        c.wait_for("^start 1", stream="out")
        c.proc.send_signal(signal.SIGINT)
        c.wait_for("SIGINT: stopping")
        started = time.monotonic()
        c.proc.send_signal(signal.SIGINT)
        assert c.finish(10) == 130, c.err
        assert time.monotonic() - started < 5  # it did not finish the 12 s task first
        assert "done 1" not in c.out
        assert any("aborting" in line for line in c.err), c.err
        # the unfinished task goes back to the queue
        with hutch.Subscriber(conn, queue=unique_name, model=bytes) as sub:
            back = [json.loads(m.body) for m in sub.messages(timeout=5, limit=1)]
        assert back == [{"n": 1, "sleep": 12}]
    finally:
        _cleanup(conn, unique_name)


@SUBPROCESS
def test_one_ctrl_c_on_worker_finishes_the_task_and_exits_0(
    cli: list[Cli], amqp_url: str, conn: hutch.Connection, unique_name: str, slow_module: Path
) -> None:
    c = Cli(amqp_url, "worker", "slowtasks:handle", "--queue", unique_name, cwd=slow_module)
    cli.append(c)
    try:
        c.wait_for("consuming queue")
        with hutch.Publisher(conn, routing_key=unique_name, mandatory=True) as pub:
            pub.publish({"n": 1, "sleep": 1.5})
        c.wait_for("^start 1", stream="out")
        c.proc.send_signal(signal.SIGINT)
        assert c.finish(30) == 0, c.err
        assert "done 1" in c.out
        assert any("worker stopped: 1 processed" in line for line in c.err), c.err
    finally:
        _cleanup(conn, unique_name)


def test_main_reads_hutch_url_like_the_library(
    capsys: pytest.CaptureFixture[str],
    amqp_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HUTCH_URL", amqp_url)
    monkeypatch.setenv("HUTCH_HEARTBEAT", "70000")  # a bad HUTCH_* variable is named
    assert main(["publish", "amq.topic", "k", "x"]) == 2
    assert "HUTCH_HEARTBEAT" in one_error_line(capsys.readouterr().err)
    monkeypatch.delenv("HUTCH_HEARTBEAT")
    assert main(["publish", "amq.topic", "k", "x"]) == 0
