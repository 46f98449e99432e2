"""examples/work_queue.py runs standalone against a real broker and spreads the tasks."""

from __future__ import annotations

import functools
import os
import re
import sys
import uuid
from pathlib import Path

import pytest

import hutch
from tests.background import Program, Programs

EXAMPLE = Path(__file__).parents[2] / "examples" / "work_queue.py"
#: Enough for both channels' windows (4 each) with tasks to spare: 4 long (0.2 s) and 12
#: short (0.05 s), about 0.35 s of work for each of the four workers.
TASKS = 16


def background_programs(url: str, items: list[pytest.Item]) -> dict[str, Program]:
    """The example on a queue of its own, run in the background (see tests.background)."""
    queue = f"test_work_queue_example-{uuid.uuid4().hex[:8]}"
    env = {k: v for k, v in os.environ.items() if k != "HUTCH_URL"}
    program = Program(
        [sys.executable, str(EXAMPLE), url, "--queue", queue, "--tasks", str(TASKS)],
        timeout=60,
        env=env,
        cleanup=functools.partial(cleanup, url, queue),
        expected=0.5,
    )
    return {"work_queue": program} if items else {}


def cleanup(url: str, queue: str) -> None:
    """Delete the example's queue and its dead-letter queue."""
    with hutch.connect(url) as conn:
        ch = conn.channel()
        ch.delete_queue(queue)
        ch.delete_queue(f"{queue}.dead")
        ch.close()


def test_work_queue_example(programs: Programs) -> None:
    result = programs.result("work_queue")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert f"{TASKS} tasks done, each exactly once: True" in out
    rows = re.findall(r"^(\d)\s+(\d)\s+(\d+)\s+(\d+)\s+[\d.]+$", out, re.MULTILINE)
    assert len(rows) == 4  # four workers...
    assert sorted(r[1] for r in rows) == ["0", "0", "1", "1"]  # ...two per channel
    assert sum(int(r[2]) for r in rows) == TASKS
    assert all(int(r[2]) > 0 for r in rows)  # every worker took part
