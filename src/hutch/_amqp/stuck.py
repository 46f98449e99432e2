"""A publishing channel that only nacks is reopened (internal).

RabbitMQ 3.10's quorum-queue client can stay on a leader that is gone: when a channel's
first publish to a quorum queue comes while the queue record still names the old leader,
``rabbit_fifo_client:enqueue`` asks that node, gets ``nodedown`` and nacks without changing
its state, so it nacks every later publish on that channel too, for good (RabbitMQ PR #9241
fixed it in 3.11). Only a new channel gets out. A producer that publishes nacked messages
again, as it should, would otherwise stay stuck on such a channel.

Nacks of a queue that is full (``reject-publish``) or has no quorum leader yet continue on
the new channel and cost one reopen per :data:`STUCK_SECONDS`.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import TYPE_CHECKING, Any

import pika.exceptions as pex
from pika.adapters.blocking_connection import BlockingChannel

from hutch._exceptions import ConnectionLost
from hutch._lifecycle import LifecycleState

if TYPE_CHECKING:
    from hutch._amqp.driver import Driver

__all__ = ["STUCK_NACKS", "STUCK_SECONDS", "NackStreaks"]

log = logging.getLogger("hutch")

#: A channel is reopened after this many publishes nacked in a row ...
STUCK_NACKS = 10
#: ... the first of them at least this many seconds ago.
STUCK_SECONDS = 2.0
# a queue that stays full repeats the reopen every few seconds: warn at most this often
_WARN_EVERY = 60.0


class NackStreaks:
    """Runs of nacks on one channel; a long one reopens the channel (base of Channel)."""

    _io: Driver
    _ch: BlockingChannel | None
    _life: LifecycleState
    _consumers: dict[str, Any]
    _unacked: deque[int]  # deliveries not yet acked
    # publishes nacked in a row on the current pika channel, and when the first was nacked
    _nack_streak: int = 0
    _nack_streak_since: float = 0.0
    _reopen_scheduled: bool = False
    _stuck_warned_at: float | None = None
    #: How many times the channel was reopened because it only had nacks.
    reopened_after_nacks: int = 0

    def on_connection_lost(self) -> None:
        raise NotImplementedError

    def restore(self) -> None:
        raise NotImplementedError

    def _count_confirm(self, nack: bool, count: int) -> None:
        """Follow the confirms of ``count`` publishes (while driving the connection)."""
        if not nack:
            self._nack_streak = 0
            return
        if self._nack_streak == 0:
            self._nack_streak_since = time.monotonic()
        self._nack_streak += count
        if (
            self._nack_streak >= STUCK_NACKS
            and time.monotonic() - self._nack_streak_since >= STUCK_SECONDS
            and not self._reopen_scheduled
        ):
            # confirms are being dispatched: the close and open run as a task after that
            self._reopen_scheduled = True
            self._io.submit(self._reopen_after_nacks)

    def _reopen_after_nacks(self) -> None:
        """Replace a publishing channel that has only nacked for a while by a new one.

        Only a channel without consumers or unsettled deliveries: closing one with them
        would cancel its consumers and requeue their messages. What the old channel had not
        yet confirmed is published again on the new one: the channel is restored as after a
        reconnect.
        """
        self._reopen_scheduled = False
        ch = self._ch
        if (
            ch is None
            or not ch.is_open
            or self._life.closed
            or self._consumers
            or self._unacked
            or self._nack_streak < STUCK_NACKS
        ):
            return
        now = time.monotonic()
        quiet = self._stuck_warned_at is not None and now - self._stuck_warned_at < _WARN_EVERY
        if not quiet:
            self._stuck_warned_at = now
        log.log(
            logging.DEBUG if quiet else logging.WARNING,
            "hutch: the broker nacked %d publishes in a row over %.1f s; reopening the "
            "channel (a RabbitMQ 3.10 quorum queue may keep nacking a channel that first "
            "published while its leader was down)",
            self._nack_streak,
            now - self._nack_streak_since,
        )
        try:
            ch.close()  # confirms that come before close-ok still settle their messages
        except (pex.AMQPConnectionError, pex.ConnectionWrongStateError, ConnectionLost):
            return  # the connection is going down: recovery republishes what is unconfirmed
        except (pex.AMQPError, OSError):
            pass
        self.reopened_after_nacks += 1
        # the new channel is set up as after a reconnect; a connection lost meanwhile is
        # the I/O thread's to recover, and recovery restores the channel again
        self.on_connection_lost()
        self.restore()
