"""pika's private API as hutch uses it: the parts that need no broker.

Behaviour, not source text: each test drives a real pika object the way hutch does and
checks the result hutch relies on. The parts that need a connection are in
tests/integration/test_pika_private_api.py; the list, with why, is in
docs/architecture.md ("Private pika access").
"""

from __future__ import annotations

import select
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pika.channel
import pika.compat
import pika.data
import pytest
from pika.adapters import select_connection
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def ioloop() -> Iterator[Any]:
    """The IOLoop under every SelectConnection (what ``conn._impl.ioloop`` is)."""
    loop: Any = select_connection.IOLoop()
    try:
        yield loop
    finally:
        loop.close()


def test_remaining_interval_is_what_the_poller_would_sleep(ioloop: Any) -> None:
    """hutch._amqp.pika_private.idle_interval asks pika's IOLoop this, read only."""
    assert ioloop._get_remaining_interval() is None  # no timers, no callbacks
    far = ioloop.call_later(30, lambda: None)
    near = ioloop.call_later(0.5, lambda: None)
    assert 0.3 < ioloop._get_remaining_interval() <= 0.5
    ioloop.remove_timeout(near)  # hutch's pump alarms are never cancelled (Alarm)...
    ioloop.add_callback_threadsafe(lambda: None)
    assert ioloop._get_remaining_interval() == 0  # ...and a pending callback means now
    ioloop.remove_timeout(far)


def test_timers_fire_in_process_timeouts_and_closed_timers_refuse(ioloop: Any) -> None:
    """The pump's alarm (hutch._amqp.pika_private.Alarm) fires once due, from the poll loop."""
    fired: list[float] = []
    start = time.monotonic()
    ioloop.call_later(0.05, lambda: fired.append(time.monotonic() - start))
    while not fired and time.monotonic() - start < 5:
        time.sleep(0.01)
        ioloop.process_timeouts()  # as BlockingConnection._flush_output does after a poll
    assert fired and fired[0] >= 0.04
    ioloop.close()
    with pytest.raises(ValueError):  # caught by Driver._pump as a connection going away
        ioloop.call_later(1, lambda: None)


def test_callback_threadsafe_rings_the_poller_interrupt(ioloop: Any) -> None:
    """hutch._amqp.pika_private.poke and pika_fds: the interrupt descriptor wakes a watcher."""
    poller = ioloop._poller
    interrupt = poller._r_interrupt.fileno()
    assert interrupt in poller._fd_handlers  # watched, like the broker socket once open
    assert select.select([interrupt], [], [], 0)[0] == []
    thread = threading.Thread(target=ioloop.add_callback_threadsafe, args=(lambda: None,))
    thread.start()
    thread.join()
    assert select.select([interrupt], [], [], 5)[0] == [interrupt]


def test_blocking_classes_have_what_hutch_calls() -> None:
    """The names hutch calls on pika objects exist and are callable with its arguments.

    A failing name here is a pika release that renamed what hutch drives; the integration
    tests then show the behaviour it had.
    """
    for name in ("_flush_output", "_dispatch_channel_events", "_dispatch_connection_events"):
        assert callable(getattr(BlockingConnection, name, None)), name
    for name in (
        "confirm_delivery",
        "basic_publish",
        "basic_ack",
        "basic_nack",
        "add_on_return_callback",
        "add_on_close_callback",
    ):
        assert callable(getattr(pika.channel.Channel, name, None)), name
    assert callable(getattr(BlockingChannel, "add_on_cancel_callback", None))


def test_pika_decodes_content_headers_through_hutchs_guarded_properties() -> None:
    """hutch._amqp.properties._install_guarded_properties_decoder, checked by what pika does.

    A content-header frame whose headers table holds an AMQP timestamp past year 9999 is
    fed to pika's own frame decoder: it must come out with the table replaced by hutch's
    marker (raw bytes and reason) and every other property decoded, not raise.
    """
    import struct

    import pika.frame
    import pika.spec

    from hutch._amqp import UndecodableHeaders, decode_properties

    table = b"\x02okI\x00\x00\x00\x05\x04whenT" + struct.pack(">Q", 2**40)
    flags = (
        pika.spec.BasicProperties.FLAG_CONTENT_TYPE
        | pika.spec.BasicProperties.FLAG_HEADERS
        | pika.spec.BasicProperties.FLAG_CORRELATION_ID
    )
    payload = (
        struct.pack(">H", flags)
        + b"\x0atext/plain"
        + struct.pack(">I", len(table))
        + table
        + b"\x03cid"
    )
    frame_data = struct.pack(">HHQ", pika.spec.BasicProperties.INDEX, 0, 3) + payload
    frame = struct.pack(">BHL", pika.spec.FRAME_HEADER, 1, len(frame_data)) + frame_data + b"\xce"

    consumed, decoded = pika.frame.decode_frame(frame)

    assert consumed == len(frame)
    assert isinstance(decoded, pika.frame.Header)
    props = decoded.properties
    assert isinstance(props.headers, UndecodableHeaders), props.headers
    assert props.headers.raw == table and "year" in props.headers.reason
    assert (props.content_type, props.correlation_id) == ("text/plain", "cid")
    properties, problem = decode_properties(props)
    assert problem is not None and "headers table cannot be decoded" in problem
    assert properties.headers == {"x-hutch-raw-headers": table}

    # a frame pika can decode comes out exactly as pika decodes it
    good = pika.BasicProperties(content_type="a/b", headers={"n": 1}, timestamp=5)
    body = b"".join(good.encode())
    frame_data = struct.pack(">HHQ", pika.spec.BasicProperties.INDEX, 0, 0) + body
    frame = struct.pack(">BHL", pika.spec.FRAME_HEADER, 1, len(frame_data)) + frame_data + b"\xce"
    decoded = pika.frame.decode_frame(frame)[1]
    assert isinstance(decoded, pika.frame.Header)
    assert decoded.properties == good
    assert decode_properties(decoded.properties)[1] is None


def test_amqp_longs_decode_as_an_int_subclass_that_header_checks_take_at_once() -> None:
    """pika decodes an AMQP long ('l', e.g. x-death's count) as ``pika.compat.long``.

    That is an int subclass, for which ``x in range(...)`` scans the range item by item
    holding the GIL: a header check written that way hung a worker on every dead-lettered
    message. Checked in a child process so that a regression fails instead of hanging.
    """
    table: dict[str, Any] = {
        "count": pika.compat.long(3),
        "nested": {"big": pika.compat.long(2**62)},
    }
    encoded: list[bytes] = []
    pika.data.encode_table(encoded, table)
    decoded, _ = pika.data.decode_table(b"".join(encoded), 0)
    assert type(decoded["count"]) is not int and isinstance(decoded["count"], int)
    code = (
        "import pika.compat; from hutch._amqp.properties import _table_problem; "
        "L = pika.compat.long; "
        "assert _table_problem({'count': L(3), 'x': {'big': L(2**62)}, 'y': [L(-5)]}) is None; "
        "assert _table_problem({'huge': L(2**63)}) is not None"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=20)


def _value_error_while(context: BaseException | None) -> ValueError:
    try:
        try:
            if context is not None:
                raise context
        finally:
            raise ValueError("Expected connected socket, but getpeername() failed")
    except ValueError as exc:
        return exc


def test_a_value_error_raised_over_a_socket_error_is_a_lost_connection() -> None:
    # pika's connection workflow when the peer reset the link before getpeername()
    from hutch import ConnectionLost
    from hutch._amqp.errors import is_lost_socket, map_pika_error

    lost = _value_error_while(OSError(107, "Transport endpoint is not connected"))
    assert is_lost_socket(lost)
    assert isinstance(map_pika_error(lost), ConnectionLost)
    plain = _value_error_while(None)
    assert not is_lost_socket(plain)
    assert not isinstance(map_pika_error(plain), ConnectionLost)
