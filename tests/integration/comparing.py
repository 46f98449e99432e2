"""What the tests comparing the memory broker with RabbitMQ share (no tests here)."""

from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

__all__ = ["compare_settings", "flag", "rare"]

#: a boolean
flag = st.booleans()
#: a boolean that is mostly False
rare = st.sampled_from([False, False, False, True])


def compare_settings(examples: int) -> settings:
    """Hypothesis settings for a comparison: ``examples`` cases, no deadline (a real broker)."""
    return settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
