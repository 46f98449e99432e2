"""What the idle I/O thread waits on without holding the connection (epoll or select)."""

from __future__ import annotations

import logging
import select
from typing import Any

import pika
import pika.channel
import pika.spec

from hutch._amqp.pika_private import pika_fds

__all__ = ["Watch"]

log = logging.getLogger("hutch")


class Watch:
    """What the idle I/O thread waits on, without holding the connection.

    Its own epoll set over pika's socket and interrupt descriptors and hutch's wake-up
    socket. While a caller drives the connection the socket is *muted* here: the caller
    reads what comes in, and the I/O thread must not wake (and compete for the GIL and
    the connection) for it. Unmuting re-arms it; level triggering then wakes the I/O
    thread at once if something arrived that the caller left unread. Without epoll (not
    Linux) it falls back to ``select`` on the same descriptors, unmuted, re-checking often.
    """

    def __init__(self, conn: pika.BlockingConnection, wake_fd: int) -> None:
        self.socks, self.interrupt = pika_fds(conn)
        self.wake_fd = wake_fd
        self.output = False
        self.muted = False
        self.ep: Any = None
        if hasattr(select, "epoll"):
            self.ep = select.epoll()
            for fd in (*self.socks, self.interrupt, wake_fd):
                self.ep.register(fd, select.EPOLLIN)

    def _arm(self, events: int) -> None:
        for fd in self.socks:
            try:
                self.ep.modify(fd, events)
            except OSError:
                pass  # the socket closed with the connection; pika will say so

    def mute(self) -> None:
        if self.ep is not None and not self.muted:
            self.muted = True
            self._arm(0)

    def unmute(self) -> None:
        if self.ep is not None and self.muted:
            self.muted = False
            self._arm(select.EPOLLIN | (select.EPOLLOUT if self.output else 0))

    def want_output(self, pending: bool) -> None:
        """Also wake when the socket can take more (pika holds output)."""
        if pending != self.output:
            self.output = pending
            if self.ep is not None and not self.muted:
                self._arm(select.EPOLLIN | (select.EPOLLOUT if pending else 0))

    def wait(self, timeout: float) -> tuple[bool, bool]:
        """Wait up to ``timeout`` s; returns (pika has I/O ready, the wake-up socket rang)."""
        if self.ep is not None:
            ready = [fd for fd, _ in self.ep.poll(timeout)]
        else:
            readable = [*self.socks, self.interrupt, self.wake_fd]
            writable = self.socks if self.output else []
            r, w, _ = select.select(readable, writable, [], min(timeout, 0.01) if timeout else 0)
            ready = [*r, *w]
        woken = self.wake_fd in ready
        return len(ready) > int(woken), woken

    def close(self) -> None:
        if self.ep is not None:
            self.ep.close()
