"""Fixtures of the hostile-input tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.hostile.producer import RawProducer


@pytest.fixture
def raw_producer(amqp_url: str) -> Iterator[RawProducer]:
    """A raw pika producer on its own connection."""
    producer = RawProducer(amqp_url)
    yield producer
    producer.close()
