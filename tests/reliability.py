"""Bookkeeping for fault tests: count every message, time every recovery, record the results.

A :class:`Ledger` tracks one scenario: which message ids were sent, confirmed, received
(how often) and dead-lettered, and how long each connection took to recover. Tests assert on
it and call :meth:`Ledger.record`; when ``HUTCH_RELIABILITY_RESULTS`` names a file, each
record is appended to it as one JSON line, which ``benchmarks/reliability_report.py`` turns
into the table in ``docs/reliability.md``.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from hutch import Connection

__all__ = ["RESULTS_ENV", "Ledger", "RecoveryClock", "wait_until"]

#: Environment variable naming the JSON-lines file results are appended to.
RESULTS_ENV = "HUTCH_RELIABILITY_RESULTS"


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds passed; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() > deadline:
            return predicate()
        time.sleep(interval)


class RecoveryClock:
    """Listens to connections and measures each outage from "lost" to "restored".

    Attach it with :meth:`watch`; :attr:`outages` holds the seconds each recovery took.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lost_at: dict[str, float] = {}
        self.outages: list[float] = []
        self.events: list[tuple[str, str]] = []
        self.restored = threading.Event()

    def watch(self, *connections: Connection) -> RecoveryClock:
        """Start listening to ``connections``; returns self for chaining."""
        for conn in connections:
            name = conn.name

            def listener(event: str, _error: BaseException | None, name: str = name) -> None:
                self._on_event(name, event)

            conn.add_listener(listener)
        return self

    def _on_event(self, name: str, event: str) -> None:
        now = time.monotonic()
        with self._lock:
            self.events.append((name, event))
            if event == "lost":
                self._lost_at.setdefault(name, now)
            elif event == "restored" and name in self._lost_at:
                self.outages.append(now - self._lost_at.pop(name))
                self.restored.set()

    def count(self, event: str) -> int:
        """How many events of this kind were seen."""
        with self._lock:
            return sum(1 for _, e in self.events if e == event)

    @property
    def down(self) -> bool:
        """True while some watched connection is lost and not yet restored."""
        with self._lock:
            return bool(self._lost_at)

    @property
    def longest(self) -> float | None:
        """The longest outage in seconds, or None if none was recovered."""
        with self._lock:
            return max(self.outages) if self.outages else None


@dataclass
class Ledger:
    """Counts every message of one fault scenario. Thread-safe.

    Attributes:
        scenario: A one-line description, used as the row title of the results table.
    """

    scenario: str
    sent: list[str] = field(default_factory=list)
    confirmed: set[str] = field(default_factory=set)
    publish_errors: list[str] = field(default_factory=list)
    refused: set[str] = field(default_factory=set)
    received: Counter[str] = field(default_factory=Counter)
    dead_lettered: Counter[str] = field(default_factory=Counter)
    clock: RecoveryClock = field(default_factory=RecoveryClock)
    started: float = field(default_factory=time.monotonic)
    notes: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def on_sent(self, message_ids: Iterable[str]) -> None:
        """Messages handed to ``publish``."""
        with self._lock:
            self.sent.extend(message_ids)

    def on_confirmed(self, message_ids: Iterable[str]) -> None:
        """Messages ``publish`` reported as confirmed."""
        with self._lock:
            self.confirmed.update(message_ids)

    def on_publish_error(self, error: BaseException) -> None:
        """``publish`` raised."""
        with self._lock:
            self.publish_errors.append(f"{type(error).__name__}: {error}")

    def on_refused(self, message_id: str) -> None:
        """``publish`` raised an expected, clear error (e.g. ConnectionBlocked).

        Such a message is not counted as lost; it may still arrive (at-least-once).
        """
        with self._lock:
            self.sent.append(message_id)
            self.refused.add(message_id)

    def on_received(self, message_id: str | None) -> None:
        """A consumer handled a message."""
        with self._lock:
            self.received[message_id or "<no id>"] += 1

    def on_dead_lettered(self, message_id: str | None) -> None:
        """A message arrived in a dead-letter queue."""
        with self._lock:
            self.dead_lettered[message_id or "<no id>"] += 1

    @property
    def received_unique(self) -> int:
        """How many distinct messages were received."""
        with self._lock:
            return len(self.received)

    @property
    def duplicated(self) -> int:
        """Extra deliveries: received more than once (at-least-once redeliveries)."""
        with self._lock:
            return sum(n - 1 for n in self.received.values() if n > 1)

    @property
    def lost(self) -> list[str]:
        """Sent messages neither received nor dead-lettered (refused ones excepted)."""
        with self._lock:
            return [
                m
                for m in self.sent
                if m not in self.received and m not in self.dead_lettered and m not in self.refused
            ]

    @property
    def unexpected(self) -> list[str]:
        """Received message ids that were never sent (must be empty)."""
        with self._lock:
            sent = set(self.sent)
            return [m for m in self.received if m not in sent]

    def summary(self) -> dict[str, Any]:
        """The numbers of the scenario, as recorded in the results file."""
        longest = self.clock.longest
        with self._lock:
            sent = len(self.sent)
            confirmed = len(self.confirmed)
            received = len(self.received)
            dead = len(self.dead_lettered)
            errors = len(self.publish_errors)
            refused = len(self.refused)
        return {
            "scenario": self.scenario,
            "sent": sent,
            "confirmed": confirmed,
            "publish_errors": errors,
            "refused": refused,
            "received": received,
            "dead_lettered": dead,
            "duplicated": self.duplicated,
            "lost": len(self.lost),
            "recoveries": len(self.clock.outages),
            "recovery_s": None if longest is None else round(longest, 2),
            "duration_s": round(time.monotonic() - self.started, 2),
            "notes": self.notes,
        }

    def record(self) -> dict[str, Any]:
        """Print the summary and append it to ``$HUTCH_RELIABILITY_RESULTS`` if set."""
        data = self.summary()
        print(f"\nreliability: {json.dumps(data)}")
        path = os.environ.get(RESULTS_ENV)
        if path:
            with open(path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(data) + "\n")
        return data

    def assert_nothing_lost(self) -> None:
        """Fail with the numbers if any message was lost, unconfirmed or unexpected."""
        data = self.summary()
        assert not self.publish_errors, (self.publish_errors[:5], data)
        assert data["lost"] == 0, (self.lost[:10], data)
        assert not self.unexpected, (self.unexpected[:10], data)
        assert data["confirmed"] == data["sent"] - data["refused"], data
