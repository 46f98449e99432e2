"""examples/work_queue.py runs standalone against a real broker and spreads the tasks."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

from hutch import Connection
from tests import forkserver

EXAMPLE = Path(__file__).parents[2] / "examples" / "work_queue.py"
#: Enough for both channels' windows (4 each) with tasks to spare: 4 long (0.2 s) and 12
#: short (0.05 s), about 0.35 s of work for each of the four workers.
TASKS = 16


def test_work_queue_example(amqp_url: str, conn: Connection, unique_name: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "HUTCH_URL"}
    try:
        result = forkserver.run(
            [sys.executable, str(EXAMPLE), amqp_url, "--queue", unique_name, "--tasks", str(TASKS)],
            timeout=60,
            env=env,
        )
    finally:
        ch = conn.channel()
        ch.delete_queue(unique_name)
        ch.delete_queue(f"{unique_name}.dead")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert f"{TASKS} tasks done, each exactly once: True" in out
    rows = re.findall(r"^(\d)\s+(\d)\s+(\d+)\s+(\d+)\s+[\d.]+$", out, re.MULTILINE)
    assert len(rows) == 4  # four workers...
    assert sorted(r[1] for r in rows) == ["0", "0", "1", "1"]  # ...two per channel
    assert sum(int(r[2]) for r in rows) == TASKS
    assert all(int(r[2]) > 0 for r in rows)  # every worker took part
