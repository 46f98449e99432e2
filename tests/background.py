"""Programs that run in the background from the start of the integration tests.

The tests that run whole programs (the docs' snippets, the examples, the demo) mostly wait:
on the programs' own simulated work and, on RabbitMQ, on the broker. Their modules say which
programs they run with a module-level ``background_programs(url, items)``; the package's
autouse fixture (``tests/integration/conftest.py``) starts them, a few at a time, when the
first integration test starts, so they run beside the in-process tests. Each test then
takes its program's result with :meth:`Programs.result`.

No thread waits for them (a thread outside hutch would keep the memory broker's virtual
time from jumping): programs end unobserved, and the next one starts whenever the tests
look, which they do between every two tests (:meth:`Programs.pump`).
"""

from __future__ import annotations

import contextlib
import select
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from tests import forkserver

#: Programs running at once. They mostly wait (their simulated work is real sleeps), so
#: more of them overlap well even on two cores: on the memory broker, where the in-process
#: tests take about 2.5 s, four at a time made the programs the run's longest path.
LIMIT = 8
#: The programs' niceness: when both cores are busy, the tests in pytest's process go first
#: (on the memory broker they are CPU-bound; on RabbitMQ some of them measure time).
NICE = 10


@dataclass
class Program:
    """A program to run: ``forkserver.start``'s arguments, and what to clean up after it."""

    argv: Sequence[str]
    env: dict[str, str]
    timeout: float
    cwd: str | None = None
    #: runs once the program has ended (on the broker: delete what it declared)
    cleanup: Callable[[], None] | None = None
    #: roughly how long it runs, in seconds: the longer ones start first
    expected: float = 0.0


@dataclass
class _Entry:
    program: Program
    run: forkserver.Run | None = None
    result: subprocess.CompletedProcess[str] | BaseException | None = None
    cleaned: bool = field(default=False)


class Programs:
    """The session's background programs, by key: the longest expected first, else in the
    order they were added."""

    def __init__(self, limit: int = LIMIT) -> None:
        self.limit = limit
        self._entries: dict[str, _Entry] = {}

    def add(self, key: str, program: Program) -> None:
        """Queue ``program`` under ``key`` (unique); it starts when a slot is free."""
        if key in self._entries:
            raise ValueError(f"a program is already queued as {key!r}")
        self._entries[key] = _Entry(program)

    def pump(self) -> None:
        """Collect the programs that ended and start queued ones in their slots."""
        running = 0
        now = time.monotonic()
        for entry in self._entries.values():
            if entry.run is not None and entry.result is None:
                if entry.run.done() or entry.run.deadline <= now:
                    self._collect(entry)  # (one past its timeout is killed)
                else:
                    running += 1
        queued = [e for e in self._entries.values() if e.run is None and e.result is None]
        for entry in sorted(queued, key=lambda e: -e.program.expected):
            if running >= self.limit:
                break
            if entry.run is None and entry.result is None:
                self._start(entry)
                running += 1

    def result(self, key: str) -> subprocess.CompletedProcess[str]:
        """Wait for the program ``key``: ``subprocess.run``'s result, after its cleanup.

        Raises:
            subprocess.TimeoutExpired: It ran past its timeout and was killed.
        """
        entry = self._entries[key]
        while entry.result is None:
            self.pump()
            if entry.result is not None:
                break
            if entry.run is None:  # queued behind others: wait for any of them
                self._wait_any()
            else:
                self._collect(entry)
        if isinstance(entry.result, BaseException):
            raise entry.result
        return entry.result

    def finish(self, prefix: str) -> None:
        """Wait for every program whose key starts with ``prefix`` (each one cleaned up)."""
        for key in list(self._entries):
            if key.startswith(prefix):
                with contextlib.suppress(Exception):  # a failure is its own test's to report
                    self.result(key)

    def close(self) -> None:
        """End the programs still running (their tests did not run: ``-x``, Ctrl-C) and
        clean up after them; drop the queued ones."""
        for entry in self._entries.values():
            if entry.run is not None and entry.result is None:
                entry.run.kill()
                self._collect(entry)

    def _start(self, entry: _Entry) -> None:
        p = entry.program
        try:
            entry.run = forkserver.start(p.argv, env=p.env, cwd=p.cwd, timeout=p.timeout, nice=NICE)
        except Exception as exc:  # the test that asks for it reports it
            entry.result = exc

    def _collect(self, entry: _Entry) -> None:
        assert entry.run is not None
        try:
            entry.result = entry.run.result()
        except Exception as exc:  # a timeout: the test reports it
            entry.result = exc
        if not entry.cleaned and entry.program.cleanup is not None:
            entry.cleaned = True
            try:
                entry.program.cleanup()
            except Exception as exc:  # the program's own test reports it, not whichever pumps
                entry.result = exc

    def _wait_any(self) -> None:
        """Block until a running program may have ended (a short poll without descriptors)."""
        runs = [e.run for e in self._entries.values() if e.run is not None and e.result is None]
        fds = [fd for fd in (r.fileno() for r in runs) if fd is not None]
        if runs and len(fds) == len(runs):
            select.select(fds, [], [], max(0.0, min(r.deadline for r in runs) - time.monotonic()))
        else:
            time.sleep(0.005)
