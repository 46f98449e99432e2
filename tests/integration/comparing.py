"""What the tests comparing the memory broker with RabbitMQ share (no tests here)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sized
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

__all__ = ["QUIET", "compare_settings", "compare_timeout", "flag", "rare", "wait_until_quiet"]

#: RabbitMQ delivers asynchronously: a step is over when nothing came for this long
QUIET = 0.02

#: a boolean
flag = st.booleans()
#: a boolean that is mostly False
rare = st.sampled_from([False, False, False, True])


def _scale() -> int:
    """``HUTCH_TEST_COMPARE_SCALE``: how many times the usual cases to generate (default 1).

    CI runs the usual counts; a longer hunt for disagreements sets, say, 10.
    """
    value = os.environ.get("HUTCH_TEST_COMPARE_SCALE", "1")
    if not (value.isascii() and value.isdigit()) or int(value) < 1:
        raise ValueError(
            f"HUTCH_TEST_COMPARE_SCALE must be a whole number of at least 1, not {value!r}"
        )
    return int(value)


def compare_timeout(seconds: int) -> pytest.MarkDecorator:
    """A comparison module's pytest timeout: ``seconds``, times ``HUTCH_TEST_COMPARE_SCALE``."""
    return pytest.mark.timeout(seconds * _scale())


def compare_settings(examples: int) -> settings:
    """Hypothesis settings for a comparison, without a deadline (a real broker).

    ``examples`` cases, times ``HUTCH_TEST_COMPARE_SCALE``.
    """
    return settings(
        max_examples=examples * _scale(),
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


def wait_until_quiet(conn: Any, events: Mapping[str, Sized], quiet: float = QUIET) -> None:
    """Let a pika ``BlockingConnection`` run until ``events`` stop growing for ``quiet`` s."""
    while True:
        before = sum(map(len, events.values()))
        conn.process_data_events(time_limit=quiet)
        if sum(map(len, events.values())) == before:
            return
