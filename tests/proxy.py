"""A small TCP forwarder on 127.0.0.1 for fault tests: stall or reset the client's link.

It sits between a client and the broker, like the forwarder in pika's own acceptance tests,
and lets a test break the network in ways a broker-side ``close_connection`` cannot:

* :meth:`TcpProxy.stall` stops forwarding in both directions while keeping every socket open,
  as a dead network path or a frozen peer would: only heartbeats can tell. Links accepted
  while stalled are held silent too, so reconnection attempts hang until they time out.
* :meth:`TcpProxy.resume` forwards new links again; the links that were stalled are reset
  (their peers gave up on them long ago).
* :meth:`TcpProxy.reset` aborts every open link with a TCP RST (``ECONNRESET`` on both ends).

Example:
    >>> with TcpProxy("127.0.0.1", broker.amqp_port) as proxy:  # doctest: +SKIP
    ...     url = proxy.url(broker.url)
    ...     proxy.stall()
"""

from __future__ import annotations

import selectors
import socket
import struct
import threading
from types import TracebackType
from urllib.parse import urlsplit, urlunsplit

__all__ = ["TcpProxy"]

_CHUNK = 65536


def _abort(sock: socket.socket) -> None:
    """Close ``sock`` with an RST instead of a FIN."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass


class _Link:
    """One client connection and its upstream connection, pumped by one thread."""

    def __init__(self, proxy: TcpProxy, client: socket.socket, upstream: socket.socket) -> None:
        self.proxy = proxy
        self.client = client
        self.upstream = upstream
        self.frozen = proxy.stalled
        self.closed = threading.Event()
        self.thread = threading.Thread(target=self._pump, name="test-proxy-link", daemon=True)

    def _pump(self) -> None:
        peer = {self.client: self.upstream, self.upstream: self.client}
        with selectors.DefaultSelector() as sel:
            sel.register(self.client, selectors.EVENT_READ)
            sel.register(self.upstream, selectors.EVENT_READ)
            while not self.closed.is_set():
                if self.frozen or self.proxy.stalled:
                    self.frozen = True  # a link that saw a stall never forwards again
                    self.closed.wait(0.05)
                    continue
                for key, _ in sel.select(timeout=0.05):
                    if self.proxy.stalled:
                        break  # stalled while selecting: forward nothing from now on
                    src: socket.socket = key.fileobj  # type: ignore[assignment]
                    try:
                        data = src.recv(_CHUNK)
                        if not data:
                            raise ConnectionResetError("peer closed")
                        if self.proxy.stalled:
                            break  # a dead link loses what was in flight
                        peer[src].sendall(data)
                    except OSError:
                        self.close(abort=False)
                        return

    def close(self, *, abort: bool) -> None:
        if self.closed.is_set():
            return
        self.closed.set()
        for sock in (self.client, self.upstream):
            if abort:
                _abort(sock)
            else:
                try:
                    sock.close()
                except OSError:
                    pass


class TcpProxy:
    """Forward ``127.0.0.1:<port>`` to ``target_host:target_port``, with faults on demand.

    Args:
        target_host: Where to forward to.
        target_port: The target's port.
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self._listener.settimeout(0.1)
        self.port: int = self._listener.getsockname()[1]
        self.stalled = False
        self._links: list[_Link] = []
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self.accepted = 0
        self._thread = threading.Thread(target=self._accept, name="test-proxy", daemon=True)
        self._thread.start()

    def url(self, broker_url: str) -> str:
        """Return ``broker_url`` with its host and port replaced by the proxy's."""
        parts = urlsplit(broker_url)
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = f"{userinfo}@127.0.0.1:{self.port}" if userinfo else f"127.0.0.1:{self.port}"
        return urlunsplit(parts._replace(netloc=netloc))

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                _abort(client)
                continue
            for sock in (client, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            link = _Link(self, client, upstream)
            with self._lock:
                self.accepted += 1
                self._links = [lk for lk in self._links if not lk.closed.is_set()]
                self._links.append(link)
            link.thread.start()

    @property
    def open_links(self) -> int:
        """How many links are open (frozen ones included)."""
        with self._lock:
            return sum(1 for lk in self._links if not lk.closed.is_set())

    def stall(self) -> None:
        """Stop forwarding on every link, open or new, keeping the sockets open."""
        self.stalled = True

    def resume(self) -> None:
        """Forward new links again; links that saw the stall are reset."""
        with self._lock:
            links = list(self._links)
        for link in links:
            if link.frozen:
                link.close(abort=True)
        self.stalled = False

    def reset(self) -> int:
        """Abort every open link with a TCP RST; return how many were reset."""
        with self._lock:
            links, self._links = self._links, []
        count = 0
        for link in links:
            if not link.closed.is_set():
                count += 1
            link.close(abort=True)
        return count

    def close(self) -> None:
        """Stop accepting and abort every link. Idempotent."""
        self._closed.set()
        try:
            self._listener.close()
        except OSError:
            pass
        self.reset()
        self._thread.join(2)

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
