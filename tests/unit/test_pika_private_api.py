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


def test_blocking_connection_internals_used_to_wake_the_io_thread() -> None:
    # hutch._connection._wake_threadsafe mirrors BlockingConnection.add_callback_threadsafe
    # minus its call_later(0) hop: it needs the same internals
    from pika.adapters.blocking_connection import BlockingConnection, _TimerEvt

    source = inspect.getsource(BlockingConnection.add_callback_threadsafe)
    assert "self._cleanup_mutex" in source
    assert "self._impl._adapter_add_callback_threadsafe(" in source
    on_timer_ready = getattr(BlockingConnection, "_on_timer_ready")  # noqa: B009
    dispatch = getattr(BlockingConnection, "_dispatch_connection_events")  # noqa: B009
    assert "self._ready_events.append(evt)" in inspect.getsource(on_timer_ready)
    assert "evt.dispatch()" in inspect.getsource(dispatch)
    assert "self._callback()" in inspect.getsource(_TimerEvt.dispatch)
