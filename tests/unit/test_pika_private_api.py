"""hutch reaches below pika's public API in a few places; these tests fail loudly if a
pika upgrade removes or renames what it relies on.

* ``BlockingChannel._impl``: the asynchronous channel, to pipeline confirms and acks.
* The I/O of a ``BlockingConnection`` driven by whichever thread holds the connection
  (hutch._connection): ``_flush_output``, the ready-event and channel-dispatch queues and
  their dispatchers, and the select IOLoop's poller descriptor, callbacks and timer heap.
"""

from __future__ import annotations

import inspect
import select
from typing import Any

import pika
from pika.adapters import select_connection
from pika.adapters.base_connection import BaseConnection
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection


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


def test_blocking_connection_internals_used_to_drive_it_from_any_thread() -> None:
    init = inspect.getsource(BlockingConnection.__init__)
    assert "self._impl = self._create_connection(" in init
    assert "self._ready_events" in init
    assert "self._channels_pending_dispatch" in init
    for name in ("_flush_output", "_dispatch_channel_events", "_dispatch_connection_events"):
        assert callable(getattr(BlockingConnection, name)), name
    flush = getattr(BlockingConnection, "_flush_output")  # noqa: B009
    params = list(inspect.signature(flush).parameters)
    assert params[1:] == ["waiters"], params
    # hutch._connection._coalesce and _output_pending: the transport's frame buffers
    from pika.adapters.utils import io_services_utils as io

    base = inspect.getsource(io._AsyncTransportBase.__init__)
    assert "self._tx_buffers: collections.deque[bytes] = collections.deque()" in base
    produce = getattr(io._AsyncTransportBase, "_produce")  # noqa: B009
    assert "while self._tx_buffers:" in inspect.getsource(produce)
    assert callable(io._AsyncTransportBase.get_write_buffer_size)
    # hutch._connection._send_now: what pika's poller calls when the socket is writable
    writable = inspect.getsource(getattr(io._AsyncPlaintextTransport, "_on_socket_writable"))  # noqa: B009
    assert "self._produce()" in writable and "_TRY_IO_AGAIN_SOCK_ERROR_CODES" in writable
    assert "self._nbio.remove_writer(" in writable
    init_state = getattr(BaseConnection, "_init_connection_state")  # noqa: B009
    assert "self._transport = None" in inspect.getsource(init_state)
    process = inspect.getsource(BlockingConnection.process_data_events)
    assert "self._dispatch_connection_events()" in process
    assert "self._dispatch_channel_events()" in process


def test_select_ioloop_internals_used_by_the_idle_io_thread() -> None:
    ioloop: Any = select_connection.IOLoop()
    try:
        assert len(ioloop._callbacks) == 0
        timer = ioloop._timer
        handle = ioloop.call_later(10, lambda: None)
        assert [t.deadline for t in timer._timeout_heap] == [handle.deadline]
        ioloop.remove_timeout(handle)
        assert timer._timeout_heap[0].callback is None  # cancelled lazily, as hutch assumes
        assert timer._num_cancellations == 1
        poller = ioloop._poller
        interrupt = poller._r_interrupt.fileno()
        assert list(poller._fd_handlers) == [interrupt]  # plus the socket once connected
        ioloop.add_callback_threadsafe(lambda: None)  # hutch._connection._poke
        assert len(ioloop._callbacks) == 1
        assert select.select([interrupt], [], [], 1)[0] == [interrupt]  # it woke the poller
    finally:
        ioloop.close()
