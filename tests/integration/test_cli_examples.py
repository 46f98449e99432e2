"""Every example of ``hutch ... --help`` and docs/cli.md runs as written against the broker.

The examples run through bash in a directory holding what they name: the docs' ``myapp``
modules and ``topology.toml``/``.yaml``, a ``report.pdf``, the queues ``tasks``, ``jobs``,
``tasks.dead`` and ``jobs.dead`` (the dead ones with a message to move), and an RPC server
of the docs' module. ``HUTCH_URL`` is the test broker; a URL written in an example is
replaced by it, except in an example that shows the error of a port nothing listens on (port
1) or of one that does not speak AMQP (15672: a fake HTTP server here). An example followed
by output in the docs must print it (``...`` stands for anything); one that keeps running
(a consumer, a worker, a server) must still be running after a few seconds, and exit 0 on
Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import hutch
from hutch._cli import build_parser
from tests.integration.test_cli import Cli
from tests.integration.test_cli_hints import http_port as http_port

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.rabbitmq_only("CLI subprocesses: a memory broker is not shared across processes"),
]

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "cli.md"
BIN = Path(sys.executable).parent
QUEUES = ["tasks", "jobs", "tasks.dead", "jobs.dead"]
LEFT_QUEUES = [
    *QUEUES,
    "images",
    "images.dead",
    "mail",
    "mail.dead",
    "rpc_queue",
    "shop.audit",
    "shop.invoices",
    "shop.invoices.dead",
]
LEFT_EXCHANGES = ["shop.orders", "shop.documents"]


#: The status line of a command that keeps running (printed once it is set up).
READY = re.compile(r"^hutch: (consuming from|worker .* consuming|serving) ", re.M)


@dataclass
class Example:
    where: str
    command: str
    output: list[str]


def help_examples() -> list[Example]:
    parser = build_parser()
    parsers: list[tuple[str, argparse.ArgumentParser]] = [("hutch --help", parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            parsers += [(f"hutch {name} --help", p) for name, p in action.choices.items()]
    found = []
    for where, p in parsers:
        epilog = p.epilog or ""
        assert "examples:" in epilog, where
        for line in epilog.split("examples:\n", 1)[1].splitlines():
            line = line.strip()
            if re.match(r"^(hutch |echo |HUTCH_URL=)", line):
                found.append(Example(where, line, []))
    return found


def docs_examples() -> list[Example]:
    found = []
    text = PAGE.read_text()
    for block in re.findall(r"^```console\n(.*?)^```", text, re.S | re.M):
        current: Example | None = None
        for line in block.splitlines():
            if line.startswith("$ "):
                current = Example("docs/cli.md", line[2:], [])
                found.append(current)
            elif current is not None and line.strip():
                current.output.append(line)
    # a placeholder (COMMAND) is not an example to run
    return [e for e in found if "COMMAND" not in e.command]


def _pattern(expected: str) -> str:
    return ".*".join(re.escape(part) for part in expected.split("...")) + "$"


@pytest.fixture
def workdir(tmp_path: Path, amqp_url: str, conn: hutch.Connection) -> Iterator[Path]:
    page = PAGE.read_text()
    for title in ["myapp/tasks.py", "myapp/rpc.py"]:
        match = re.search(rf'```python title="{re.escape(title)}"\n(.*?)```', page, re.S)
        assert match, title
        path = tmp_path / title
        path.parent.mkdir(parents=True, exist_ok=True)
        (path.parent / "__init__.py").touch()
        path.write_text(match.group(1))
    for fmt in ["toml", "yaml"]:
        match = re.search(rf"```{fmt}\n# topology\.{fmt}\n(.*?)```", page, re.S)
        assert match, fmt
        (tmp_path / f"topology.{fmt}").write_text(match.group(1))
    (tmp_path / "report.pdf").write_bytes(b"%PDF-1.4 fake\x00\xff")
    ch = conn.channel()
    ch.declare([hutch.Queue(name) for name in QUEUES])
    with hutch.Publisher(conn) as pub:
        for name in ["tasks.dead", "jobs.dead"]:
            pub.publish({"moved": name}, routing_key=name)
    try:
        yield tmp_path
    finally:
        for name in LEFT_QUEUES:
            ch.delete_queue(name)
        for name in LEFT_EXCHANGES:
            ch.delete_exchange(name)
        ch.close()


def _run(example: Example, cwd: Path, env: dict[str, str]) -> tuple[int | str, str, str]:
    with (cwd / ".stderr").open("w+") as err_file, (cwd / ".stdout").open("w+") as out_file:
        pipeline = "|" in example.command
        # a single command replaces the shell (exec), so Ctrl-C reaches it as from a terminal
        script = (
            example.command
            if pipeline
            else re.sub(r"^((?:\w+=\S+ )*)", r"\1exec ", example.command, count=1)
        )
        proc = subprocess.Popen(
            ["bash", "-c", script],
            cwd=cwd,
            env=env,
            stdout=out_file,
            stderr=err_file,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
            err_file.seek(0)
            if not pipeline and READY.search(err_file.read()):
                # it runs: leave it a moment to fail, if it is going to (an error after
                # this still shows in its exit status and stderr after Ctrl-C)
                time.sleep(0.3)
                break
        if proc.poll() is None:
            # still running (a consumer, worker or server): Ctrl-C stops it gracefully
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(40)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                return "hung after Ctrl-C", "", ""
        err_file.seek(0)
        out_file.seek(0)
        return proc.returncode, out_file.read(), err_file.read()


def test_every_example_runs_as_written(
    workdir: Path, amqp_url: str, http_port: int, conn: hutch.Connection
) -> None:
    examples = help_examples() + docs_examples()
    assert len(examples) > 30
    if any("jq " in e.command for e in examples):
        assert (
            subprocess.run(["bash", "-c", "command -v jq"], capture_output=True).returncode == 0
        ), "the examples pipe through jq: install it (apt-get install jq)"
    env = {
        **os.environ,
        "HUTCH_URL": amqp_url,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("HUTCH_TEST_AMQP_URL", None)
    server = Cli(amqp_url, "serve", "myapp.rpc:server", cwd=workdir)
    failures = []
    try:
        server.wait_for("serving ")
        for example in examples:
            command, output = example.command, list(example.output)
            if "localhost:15672" in command:
                command = command.replace("localhost:15672", f"127.0.0.1:{http_port}")
                output = [o.replace("localhost:15672", f"127.0.0.1:{http_port}", 1) for o in output]
            elif "localhost:1/" not in command:
                command = re.sub(r"amqp://[^\s'\"]+", amqp_url, command)
            code, out, err = _run(Example(example.where, command, output), workdir, env)
            if output and output[0].startswith("hutch: error: "):
                ok = code not in (0, "hung after Ctrl-C") and any(
                    re.match(_pattern(output[0]), line) for line in err.splitlines()
                )
            else:
                ok = code == 0 and "hutch: error" not in err
                if ok and output:
                    lines = out.splitlines()
                    ok = all(
                        i < len(lines) and re.match(_pattern(want), lines[i])
                        for i, want in enumerate(o for o in output if o != "...")
                    )
            if not ok:
                failures.append(
                    f"{example.where}: {example.command}\n  -> {code}\n  out: {out[-400:]!r}"
                    f"\n  err: {err[-600:]!r}"
                )
    finally:
        server.proc.send_signal(signal.SIGTERM)
        server.finish(30)
        server.close()
    assert not failures, "\n".join(failures)
    # the moved dead letters arrived
    with hutch.Subscriber(conn, queue="jobs", model=bytes) as sub:
        assert {"moved": "jobs.dead"} in [json.loads(m.body) for m in sub.messages(timeout=1)]
