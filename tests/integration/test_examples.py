"""Every script in examples/ runs against the broker and prints what it should."""

from __future__ import annotations

import functools
import os
import sys
import uuid
from pathlib import Path

import pytest

import hutch
from tests.background import Program, Programs

pytestmark = pytest.mark.timeout(90)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def cleanup(url: str, prefix: str) -> None:
    """Delete what an example leaves on the broker (the seed's exchange is not auto-delete)."""
    with hutch.connect(url) as conn:
        ch = conn.channel()
        ch.delete_exchange(prefix + "ff.version.b")
        ch.close()


def example(name: str, url: str) -> Program:
    """The example script, its entity names under a prefix of its own (cleaned up after)."""
    prefix = f"test-{uuid.uuid4().hex[:8]}."
    return Program(
        [sys.executable, str(EXAMPLES / name), url],
        timeout=60,
        env={**os.environ, "HUTCH_EXAMPLE_PREFIX": prefix, "HUTCH_URL": "amqp://nowhere:1/"},
        cleanup=functools.partial(cleanup, url, prefix),
    )


def background_programs(url: str, items: list[pytest.Item]) -> dict[str, Program]:
    """The examples of the selected tests, run in the background (see tests.background).

    The demo runs 40 tasks instead of 400 in its work queue section: round-robin still
    hands all five long ones to one worker (about 0.3 s against 0.1 s for fair dispatch).
    """
    demo = Program(
        [sys.executable, str(EXAMPLES / "demo.py"), url],
        timeout=80,
        env={**os.environ, "COLUMNS": "120", "HUTCH_DEMO_TASKS": "40"},
        expected=1.0,
    )
    every = {
        "test_broadcast": lambda: example("broadcast.py", url),
        "test_routing": lambda: example("routing.py", url),
        "test_demo": lambda: demo,
    }
    return {f"examples:{item.name}": every[item.name]() for item in items if item.name in every}


def lines_of(programs: Programs, test: str) -> list[str]:
    """The output lines of the test's example, which must have succeeded."""
    result = programs.result(f"examples:{test}")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return result.stdout.splitlines()


def test_broadcast(programs: Programs) -> None:
    lines = lines_of(programs, "test_broadcast")
    everything = "api 2.4.0, web 1.9.2, billing 0.7.1, api 2.4.1"
    assert lines[-3:] == [
        f"dashboard received 4: {everything}",
        f"deployer received 4: {everything}",
        f"auditor received 4: {everything}",
    ]
    assert [line for line in lines if line.startswith("published")] == [
        "published api 2.4.0",
        "published web 1.9.2",
        "published billing 0.7.1",
        "published api 2.4.1",
    ]
    queues = [line.split()[-1] for line in lines if "listens on its own queue" in line]
    assert len(queues) == 3 and len(set(queues)) == 3  # one anonymous queue each


def test_routing(programs: Programs) -> None:
    lines = [" ".join(line.split()) for line in lines_of(programs, "test_routing")]
    assert lines == [
        "direct exchange: published info, warning, error, debug",
        "key 'error' got error",
        "keys 'info', 'warning', 'error' got info, warning, error",
        "topic exchange: published order, order.created, order.created.eu, refund.created.eu, eu",
        "pattern 'order.*' got order.created",
        "pattern 'order.#' got order, order.created, order.created.eu",
        "pattern '*.*.eu' got order.created.eu, refund.created.eu",
        "pattern '#.eu' got order.created.eu, refund.created.eu, eu",
        "pattern '#' got order, order.created, order.created.eu, refund.created.eu, eu",
        "headers exchange: published pdf-report, pdf-log, csv-report, csv-log",
        "format=pdf all type=report got pdf-report",
        "format=pdf any type=report got pdf-report, pdf-log, csv-report",
    ]


def test_demo(programs: Programs) -> None:
    result = programs.result("examples:test_demo")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    for section in [
        "1. Broadcast",
        "2. Routing",
        "3. Work queue with fair dispatch",
        "4. RPC with a typed stub",
        "5. Retries and dead letters",
        "Summary",
    ]:
        assert section in out, section
    assert "all patterns worked" in out
    assert "✗" not in out
    assert "lost 0" in out
    assert "40 tasks, 8 workers" in out  # the demo took its size from HUTCH_DEMO_TASKS
