"""hutch uses one private pika attribute (BlockingChannel._impl) to pipeline confirms.

This test fails loudly if a pika upgrade removes or renames it.
"""

from __future__ import annotations

import inspect

import pika
from pika.adapters.blocking_connection import BlockingChannel


def test_blocking_channel_keeps_its_async_channel_in_impl() -> None:
    source = inspect.getsource(BlockingChannel.__init__)
    assert "self._impl = channel_impl" in source, f"pika {pika.__version__} changed BlockingChannel"


def test_async_channel_api_used_by_hutch_exists() -> None:
    for name in (
        "confirm_delivery",
        "basic_publish",
        "basic_ack",
        "basic_nack",
        "add_on_return_callback",
        "add_on_close_callback",
    ):
        assert callable(getattr(pika.channel.Channel, name)), name
    params = inspect.signature(pika.channel.Channel.confirm_delivery).parameters
    assert "ack_nack_callback" in params
