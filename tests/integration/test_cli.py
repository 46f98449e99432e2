"""The ``hutch`` command line against a real broker, in-process and as a subprocess."""

from __future__ import annotations

import io
import json
import os
import queue as _queue
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import hutch
from hutch.testing import run_cli
from tests import forkserver

pytestmark = [
    pytest.mark.timeout(60),
]

ROOT = Path(__file__).resolve().parents[2]
#: The tests that talk to a ``hutch`` subprocess while the test itself uses the broker: a
#: memory broker lives in one process. The rest run the CLI in-process, on both brokers.
SUBPROCESS = pytest.mark.rabbitmq_only(
    "a CLI subprocess shares the broker with the test: a memory broker is not shared "
    "across processes"
)


# --------------------------------------------------------------------------- helpers


def run(capsys: pytest.CaptureFixture[str], url: str, *argv: str) -> tuple[int, str, str]:
    """``hutch --url URL ARGV...`` in this process: (exit status, stdout, stderr)."""
    code = run_cli("--url", url, *argv)
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("hutch: error: ") and "Traceback" not in err, err
    return lines[0]


def temp_queue(name: str) -> hutch.Queue:
    return hutch.Queue(name, durable=False, expires=60)


def drain(conn: hutch.Connection, queue: str) -> list[hutch.Message[bytes]]:
    with hutch.Subscriber(conn, queue=queue, model=bytes) as sub:
        return list(sub.messages(timeout=0.3))


class Cli:
    """``python -m hutch ...`` as a subprocess; stderr is read line by line in a thread."""

    def __init__(self, url: str, *argv: str, cwd: Path | None = None) -> None:
        env = {**os.environ, "HUTCH_URL": url, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hutch", *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=cwd,
        )
        self.err_lines: _queue.Queue[str] = _queue.Queue()
        self.err: list[str] = []
        self.out_lines: _queue.Queue[str] = _queue.Queue()
        self.out: list[str] = []
        self._pumps = [
            threading.Thread(target=self._pump, args=(self.proc.stderr, self.err_lines)),
            threading.Thread(target=self._pump, args=(self.proc.stdout, self.out_lines)),
        ]
        for pump in self._pumps:
            pump.start()

    @staticmethod
    def _pump(stream: io.TextIOBase | None, lines: _queue.Queue[str]) -> None:
        assert stream is not None
        for line in stream:
            lines.put(line.rstrip("\n"))

    def wait_for(self, pattern: str, *, stream: str = "err", timeout: float = 20) -> str:
        lines, seen = (self.err_lines, self.err) if stream == "err" else (self.out_lines, self.out)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=0.1)
            except _queue.Empty:
                if self.proc.poll() is not None and lines.empty():
                    break
                continue
            seen.append(line)
            if re.search(pattern, line):
                return line
        raise AssertionError(f"no {pattern!r} on std{stream}; got {seen}; err {self.err}")

    def finish(self, timeout: float = 20) -> int:
        code = self.proc.wait(timeout)
        self._close_pipes()
        for lines, seen in ((self.err_lines, self.err), (self.out_lines, self.out)):
            while not lines.empty():
                seen.append(lines.get())
        return code

    def _close_pipes(self) -> None:
        for pump in self._pumps:
            pump.join(10)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._close_pipes()


@pytest.fixture
def cli(amqp_url: str) -> Iterator[list[Cli]]:
    started: list[Cli] = []
    yield started
    for c in started:
        c.close()


# --------------------------------------------------------------------------- publish


def test_publish_json_with_headers_and_properties(
    capsys: pytest.CaptureFixture[str], amqp_url: str, conn: hutch.Connection, unique_name: str
) -> None:
    q = temp_queue(unique_name)
    conn.channel().declare([q])
    code, out, err = run(
        capsys,
        amqp_url,
        "publish",
        "",
        q.name,
        '{"id": 1, "item": "book"}',
        "-H",
        "source=web",
        "-H",
        "pages:=3",
        "-p",
        "correlation_id=c-1",
        "-p",
        "priority=4",
        "-p",
        "type=order.created",
        "--mandatory",
    )
    assert code == 0, err
    assert "published 1 message to the default exchange" in err
    [message] = drain(conn, q.name)
    assert out.strip() == message.message_id
    assert json.loads(message.raw_body) == {"id": 1, "item": "book"}
    assert message.content_type == "application/json"
    assert dict(message.headers) == {"source": "web", "pages": 3}
    props = message.properties
    assert (props.correlation_id, props.priority, props.type) == ("c-1", 4, "order.created")
    assert props.delivery_mode == 2


def test_publish_text_raw_stdin_and_lines(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    amqp_url: str,
    conn: hutch.Connection,
    unique_name: str,
) -> None:
    q = temp_queue(unique_name)
    conn.channel().declare([q])
    assert run(capsys, amqp_url, "publish", "", q.name, "hello", "--transient")[0] == 0
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"\xff\x00raw\n")))
    assert run(capsys, amqp_url, "publish", "", q.name)[0] == 0
    monkeypatch.setattr(
        sys, "stdin", io.TextIOWrapper(io.BytesIO(b'{"n": 1}\n\nplain\n{"n": 3}\n'))
    )
    code, out, err = run(capsys, amqp_url, "publish", "", q.name, "--lines")
    assert code == 0, err
    assert len(out.split()) == 3 and "published 3 messages" in err
    messages = drain(conn, q.name)
    assert [(m.raw_body, m.content_type) for m in messages] == [
        (b"hello", "text/plain; charset=utf-8"),
        (b"\xff\x00raw\n", "application/octet-stream"),  # raw bytes keep their newline
        (b'{"n": 1}', "application/json"),
        (b"plain", "text/plain; charset=utf-8"),
        (b'{"n": 3}', "application/json"),
    ]
    assert messages[0].properties.delivery_mode == 1
    assert [m.message_id for m in messages[2:]] == out.split()


def test_publish_failures_are_one_line(
    capsys: pytest.CaptureFixture[str], amqp_url: str, unique_name: str
) -> None:
    code, out, err = run(
        capsys, amqp_url, "publish", "amq.direct", f"{unique_name}.nobody", "x", "--mandatory"
    )
    assert code == 1 and out == ""
    assert "unroutable (312 NO_ROUTE)" in one_error_line(err)

    code, _, err = run(capsys, amqp_url, "publish", unique_name, "k", "x")
    assert code == 1
    line = one_error_line(err)
    assert f"no exchange '{unique_name}'" in line and "404" in line


@pytest.mark.rabbitmq_only("RabbitMQ's check of amqp:// credentials (memory:// has no users)")
def test_a_wrong_password_is_one_line_without_the_password(
    capsys: pytest.CaptureFixture[str], amqp_url: str
) -> None:
    bad_password = re.sub(r"//([^:]+):([^@]*)@", r"//\1:wrong-password@", amqp_url)
    code, _, err = run(capsys, bad_password, "publish", "amq.direct", "k", "x")
    assert code == 1
    line = one_error_line(err)
    assert "refused the credentials" in line and "wrong-password" not in line


# --------------------------------------------------------------------------- consume


def test_consume_a_queue_as_json_lines(
    capsys: pytest.CaptureFixture[str], amqp_url: str, conn: hutch.Connection, unique_name: str
) -> None:
    q = temp_queue(unique_name)
    with hutch.Publisher(conn, routing_key=q.name, declare=[q]) as pub:
        pub.publish({"id": 1}, headers={"n": 1})
        pub.publish("text body")
        pub.publish(b"\x00\xff")
        pub.publish("left in the queue")
    code, out, err = run(capsys, amqp_url, "consume", "--queue", q.name, "--count", "3", "--json")
    assert code == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    assert [(r["body"], r["body_encoding"]) for r in records] == [
        ({"id": 1}, "json"),
        ("text body", "text"),
        ("AP8=", "base64"),
    ]
    assert records[0]["headers"] == {"n": 1} and records[0]["routing_key"] == q.name
    assert records[0]["properties"]["content_type"] == "application/json"
    assert "received 3 messages" in err
    assert [m.body for m in drain(conn, q.name)] == [b"left in the queue"]


def test_consume_timeouts(
    capsys: pytest.CaptureFixture[str], amqp_url: str, unique_name: str, clock: hutch.Clock
) -> None:
    started = clock.now()
    code, out, err = run(
        capsys, amqp_url, "consume", "amq.topic", "-k", unique_name, "--timeout", "0.5"
    )
    elapsed = clock.now() - started
    assert code == 0 and out == "" and "received 0 messages" in err
    assert 0.4 < elapsed < 5

    code, _, err = run(
        capsys, amqp_url, "consume", "amq.topic", "-k", unique_name, "-n", "2", "-t", "0.5"
    )
    assert code == 1
    assert "timed out after 0.5 s: received 0 of 2 messages" in err.splitlines()[-1]


@SUBPROCESS
def test_consume_binds_a_temporary_queue_with_patterns(
    cli: list[Cli], amqp_url: str, conn: hutch.Connection, unique_name: str
) -> None:
    events = hutch.Exchange(unique_name, "topic", durable=False, auto_delete=True)
    conn.channel().declare([events])
    keeper = hutch.Subscriber(conn, exchange=events, routing_keys="#").open()  # keeps it alive
    c = Cli(amqp_url, "consume", unique_name, "-k", "order.*", "-k", "#.eu", "-n", "3", "--json")
    cli.append(c)
    c.wait_for(r"consuming from queue 'amq\.gen-.*keys 'order\.\*', '#\.eu'")
    with hutch.Publisher(conn, exchange=events, model=str) as pub:
        for key in ["order.created", "order.created.us", "refund.eu", "order.paid"]:
            pub.publish(key, routing_key=key)
    assert c.finish() == 0, c.err
    assert [json.loads(line)["routing_key"] for line in c.out] == [
        "order.created",
        "refund.eu",
        "order.paid",
    ]
    keeper.close()


@SUBPROCESS
def test_consume_headers_and_a_graceful_sigterm(
    cli: list[Cli], amqp_url: str, conn: hutch.Connection, unique_name: str
) -> None:
    docs = hutch.Exchange(unique_name, "headers", durable=False, auto_delete=True)
    conn.channel().declare([docs])
    keeper = hutch.Subscriber(conn, exchange=docs, headers={"x": "y"}).open()
    c = Cli(
        amqp_url, "consume", unique_name, "-H", "format=pdf", "-H", "pages:=3", "--match", "any"
    )
    cli.append(c)
    c.wait_for("consuming from queue")
    with hutch.Publisher(conn, exchange=docs, model=str) as pub:
        pub.publish("pdf", headers={"format": "pdf"})
        pub.publish("three pages as text", headers={"pages": "3"})  # a string: no match
        pub.publish("three pages", headers={"pages": 3})
    c.wait_for("^three pages$", stream="out")
    c.proc.send_signal(signal.SIGTERM)
    assert c.finish() == 0, c.err
    assert [line for line in c.out if not line.startswith("#")] == ["pdf", "three pages"]
    assert any("received 2 messages" in line for line in c.err)
    keeper.close()


def test_the_hutch_script_is_installed(amqp_url: str) -> None:
    script = Path(sys.executable).parent / "hutch"
    assert script.exists(), f"the console script {script} is missing: pip install -e ."
    # the console script itself, run by its venv's interpreter in a forked process
    result = forkserver.run(
        [sys.executable, str(script), "publish", "amq.direct", "nobody", "x", "--mandatory"],
        timeout=30,
        env={**os.environ, "HUTCH_URL": amqp_url},
    )
    assert result.returncode == 1
    assert "unroutable" in one_error_line(result.stderr)


# --------------------------------------------------------------------------- declare


def test_declare_a_topology_file(
    capsys: pytest.CaptureFixture[str],
    amqp_url: str,
    conn: hutch.Connection,
    unique_name: str,
    tmp_path: Path,
) -> None:
    n = unique_name
    path = tmp_path / "topology.toml"
    path.write_text(
        f"""
[[exchanges]]
name = "{n}.orders"
type = "topic"
auto_delete = true

[[exchanges]]
name = "{n}.docs"
type = "headers"
auto_delete = true

[[queues]]
name = "{n}.audit"
durable = false
expires = 60

[[queues]]
name = "{n}.pdfs"
durable = false
expires = 60
max_length = 1

[[bindings]]
exchange = "{n}.orders"
queue = "{n}.audit"
routing_key = ["order.*", "refund.#"]

[[bindings]]
exchange = "{n}.docs"
queue = "{n}.pdfs"
headers = {{ format = "pdf" }}
"""
    )
    code, out, err = run(capsys, amqp_url, "declare", str(path))
    assert code == 0, err
    assert len(out.splitlines()) == 7 and all(
        line.startswith("declared ") for line in out.splitlines()
    )
    assert run(capsys, amqp_url, "declare", str(path))[0] == 0  # idempotent

    with hutch.Publisher(conn, exchange=f"{n}.orders", model=str) as pub:
        for key in ["order.created", "refund", "refund.issued.eu", "invoice.created"]:
            pub.publish(key, routing_key=key)
    with hutch.Publisher(conn, exchange=f"{n}.docs", model=str) as pub:
        pub.publish("a pdf", headers={"format": "pdf"})
        pub.publish("newest pdf", headers={"format": "pdf"})  # max_length 1 drops the oldest
        pub.publish("a csv", headers={"format": "csv"})
    assert [m.body for m in drain(conn, f"{n}.audit")] == [
        b"order.created",
        b"refund",
        b"refund.issued.eu",
    ]
    assert [m.body for m in drain(conn, f"{n}.pdfs")] == [b"newest pdf"]

    path.write_text(path.read_text().replace("max_length = 1", "max_length = 2"))
    code, out, err = run(capsys, amqp_url, "declare", str(path))
    assert code == 1
    assert "nothing was declared" in one_error_line(err)
    (differs,) = [line for line in out.splitlines() if line.startswith("differs ")]
    assert f"{n}.pdfs" in differs and "x-max-length" in differs  # the entity and the setting


# --------------------------------------------------------------------------- call / serve


@pytest.fixture
def calculator(conn: hutch.Connection, unique_name: str) -> Iterator[str]:
    server = hutch.RpcServer(conn, queue=hutch.Queue(unique_name, durable=False, auto_delete=True))

    @server.procedure
    def add(x: int, y: int) -> int:
        return x + y

    @server.procedure
    def divide(a: float, b: float) -> float:
        return a / b

    @server.procedure
    def slow() -> None:
        conn.clock.sleep(1)  # on virtual time the call's 0.3 s timeout jumps, and so does this

    with server:
        yield unique_name


def test_call(capsys: pytest.CaptureFixture[str], amqp_url: str, calculator: str) -> None:
    q = ["--queue", calculator]
    assert run(capsys, amqp_url, "call", "add", "1", "2", *q)[:2] == (0, "3\n")
    assert run(capsys, amqp_url, "call", "add", "--kwargs", '{"x": 5, "y": 6}', *q)[:2] == (
        0,
        "11\n",
    )

    code, _, err = run(capsys, amqp_url, "call", "divide", "1", "0", *q)
    assert code == 1
    assert "call to divide failed: ZeroDivisionError: float division by zero" in one_error_line(err)

    code, _, err = run(capsys, amqp_url, "call", "slow", "--timeout", "0.3", *q)
    assert code == 1
    assert "waited 0.3 s" in one_error_line(err)

    code, _, err = run(capsys, amqp_url, "call", "add", "1", "2", "--queue", calculator + ".none")
    assert code == 1
    assert "no server" in one_error_line(err).lower()


def write_docs_module(tmp_path: Path, title: str) -> None:
    """Write the ``myapp/...`` module shown in docs/cli.md, so the docs are what we test."""
    page = (ROOT / "docs" / "cli.md").read_text()
    match = re.search(rf'```python title="{re.escape(title)}"\n(.*?)```', page, re.S)
    assert match, f"docs/cli.md has no {title} block"
    path = tmp_path / title
    path.parent.mkdir(parents=True, exist_ok=True)
    (path.parent / "__init__.py").touch()
    path.write_text(match.group(1))


@SUBPROCESS
def test_serve_the_module_from_the_docs(
    capsys: pytest.CaptureFixture[str], cli: list[Cli], amqp_url: str, tmp_path: Path
) -> None:
    write_docs_module(tmp_path, "myapp/rpc.py")
    # serve the docs' module on a queue of this test's own, not the shared default
    module = tmp_path / "myapp" / "rpc.py"
    queue = f"cli-serve-{uuid.uuid4().hex[:8]}"
    text = module.read_text()
    assert "hutch.RpcServer()" in text  # the connection comes from HUTCH_URL
    module.write_text(
        text.replace(
            "hutch.RpcServer()",
            f"hutch.RpcServer(queue=hutch.Queue({queue!r}, durable=False, auto_delete=True))",
        )
    )
    # HUTCH_URL points nowhere: `serve --url` must hand its URL to the module through it
    c = Cli(
        "amqp://guest:guest@127.0.0.1:1/",
        "serve",
        "myapp.rpc:server",
        "--url",
        amqp_url,
        cwd=tmp_path,
    )
    cli.append(c)
    c.wait_for(f"serving add, add_point, divide, greet on queue '{queue}'")
    assert run(capsys, amqp_url, "call", "add", "20", "22", "--queue", queue)[:2] == (0, "42\n")
    c.proc.send_signal(signal.SIGTERM)
    assert c.finish() == 0, c.err
    assert any("server stopped: 1 calls answered" in line for line in c.err), c.err


# --------------------------------------------------------------------------- worker


@SUBPROCESS
def test_worker_runs_the_handler_from_the_docs(
    cli: list[Cli], amqp_url: str, conn: hutch.Connection, unique_name: str, tmp_path: Path
) -> None:
    write_docs_module(tmp_path, "myapp/tasks.py")
    c = Cli(
        amqp_url, "worker", "myapp.tasks:resize", "--queue", unique_name, "-c", "2", cwd=tmp_path
    )
    cli.append(c)
    c.wait_for(f"consuming queue '{unique_name}' with 2 threads")
    with hutch.Publisher(conn, routing_key=unique_name, mandatory=True) as pub:
        for image in ["a.png", "b.png", "c.png"]:
            pub.publish({"image": image})

    # the docs' handler uses print(), which writes the text and the newline separately, so
    # the two worker threads' lines may run together ("resizing a.pngresizing b.png"):
    # count the messages, not the lines
    def resized() -> list[str]:
        return sorted(re.findall(r"resizing \w\.png", "".join(c.out)))

    while len(resized()) < 3:
        c.wait_for("resizing ", stream="out")
    c.proc.send_signal(signal.SIGTERM)
    assert c.finish() == 0, c.err
    assert resized() == ["resizing a.png", "resizing b.png", "resizing c.png"]
    assert any("worker stopped: 3 processed" in line for line in c.err), c.err
    ch = conn.channel()
    ch.delete_queue(unique_name)
    ch.delete_queue(f"{unique_name}.dead")


@SUBPROCESS
def test_worker_processes_and_dead_letters(
    cli: list[Cli], amqp_url: str, conn: hutch.Connection, unique_name: str, tmp_path: Path
) -> None:
    (tmp_path / "failing.py").write_text(
        "import os\n\n\ndef handle(body: dict) -> None:\n"
        "    if body['fail']:\n        raise RuntimeError(f'task {body[\"n\"]} failed')\n"
        "    print(f'done {body[\"n\"]} in {os.getpid()}', flush=True)\n"
    )
    c = Cli(
        amqp_url,
        "worker",
        "failing:handle",
        "--queue",
        unique_name,
        "--concurrency",
        "2",
        "--processes",
        "--max-attempts",
        "1",
        cwd=tmp_path,
    )
    cli.append(c)
    c.wait_for("with 2 processes", timeout=40)
    with hutch.Publisher(conn, routing_key=unique_name, mandatory=True) as pub:
        pub.publish({"n": 1, "fail": False})
        pub.publish({"n": 2, "fail": True})
    done = c.wait_for("^done 1 in ", stream="out")
    assert int(done.rsplit(" ", 1)[1]) != c.proc.pid  # ran in a child process
    deadline = time.monotonic() + 10
    dead: list[hutch.Message[bytes]] = []
    while not dead and time.monotonic() < deadline:
        dead = drain(conn, f"{unique_name}.dead")
    assert [json.loads(m.body)["n"] for m in dead] == [2]
    assert str(dead[0].headers["x-hutch-error"]).startswith("task 2 failed")
    assert dead[0].headers["x-hutch-error-type"] == "RuntimeError"
    c.proc.send_signal(signal.SIGINT)
    assert c.finish(30) == 0, c.err
    ch = conn.channel()
    ch.delete_queue(unique_name)
    ch.delete_queue(f"{unique_name}.dead")
