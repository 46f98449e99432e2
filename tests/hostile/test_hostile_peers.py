"""A peer that is not a broker, or one that drops the link while hutch connects.

Load balancers and proxies accept a TCP connection and then reset or close it, or answer
with bytes that are not AMQP. Every such attempt must fail as a connection attempt
(:class:`~hutch.ConnectError`, the next address tried, recovery retried), never as an
unexpected error that ends the connection for good. Found by CI: pika raises a
``ValueError`` out of ``BlockingConnection()`` when the socket is reset between its connect
and its ``getpeername()`` check, and a reconnecting connection died of it.

The peer is a process of its own, so that it resets links as fast as the kernel lets it,
while hutch's connection workflow runs in this one.
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hutch import ConnectError, Connection, HutchError

pytestmark = pytest.mark.timeout(120)

#: What the peer does with each link it accepts.
BEHAVIOURS = ["reset", "close", "garbage-then-reset", "half-header-then-close"]


PEER = """
import socket, struct, sys
behaviours = sys.argv[1:]
listener = socket.create_server(("127.0.0.1", 0), backlog=64)
print(listener.getsockname()[1], flush=True)
i = 0
while True:
    conn, _ = listener.accept()
    what = behaviours[i % len(behaviours)]
    i += 1
    try:
        if what == "garbage-then-reset":
            conn.sendall(b"HTTP/1.1 400 Bad Request\\r\\n\\r\\n")
        elif what == "half-header-then-close":
            conn.sendall(b"AMQP\\x00")
        if what.endswith("reset"):
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:  # the client gave up first
        pass
    conn.close()
"""


class HostilePeer:
    """A listening socket in another process, treating its links with ``behaviours`` in turn."""

    def __init__(self, behaviours: list[str]) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-c", PEER, *behaviours], stdout=subprocess.PIPE, text=True
        )
        assert self._proc.stdout is not None
        self.port = int(self._proc.stdout.readline())

    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"

    def close(self) -> None:
        self._proc.kill()
        self._proc.wait(5)
        if self._proc.stdout is not None:
            self._proc.stdout.close()


@pytest.fixture
def resetting_peer() -> Iterator[HostilePeer]:
    peer = HostilePeer(["reset"])
    yield peer
    peer.close()


def _open_fails(url: str) -> str:
    """How one ``open()`` failed: the exception's class name (it must fail)."""
    try:
        Connection(url, connect_timeout=2, connection_name="hostile-peer").open()
    except HutchError as exc:
        return type(exc).__name__ if isinstance(exc, ConnectError) else repr(exc)
    raise AssertionError("a peer that is no broker was taken for one")


def test_a_peer_that_resets_every_link_fails_each_open_as_a_connect_error(
    resetting_peer: HostilePeer,
) -> None:
    # about one attempt in twenty meets the reset between connect and getpeername()
    outcomes = Counter(_open_fails(resetting_peer.url()) for _ in range(600))
    assert outcomes == {"ConnectError": 600}, outcomes


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(behaviours=st.lists(st.sampled_from(BEHAVIOURS), min_size=1, max_size=8))
def test_whatever_the_peer_does_open_fails_as_a_connect_error(behaviours: list[str]) -> None:
    peer = HostilePeer(behaviours)
    try:
        outcomes = Counter(_open_fails(peer.url()) for _ in range(100))
    finally:
        peer.close()
    assert outcomes == {"ConnectError": 100}, outcomes


def test_a_resetting_first_address_fails_over_to_the_broker(
    resetting_peer: HostilePeer, amqp_url: str
) -> None:
    if amqp_url.startswith("memory://"):
        pytest.skip("an address list needs a broker on the network")
    for _ in range(150):
        # every open starts with the first address: the peer, then the broker
        with Connection([resetting_peer.url(), amqp_url], connect_timeout=5) as conn:
            assert conn.io.connected_address is not None
            assert conn.io.connected_address.port != resetting_peer.port
