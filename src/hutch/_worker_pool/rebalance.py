"""The consumers of a partitioned pool, and the hand-back that spreads partitions over pools.

Each partition queue has a single active consumer, and RabbitMQ makes the first consumer
to register the active one: the first pool to start would hold every partition while the
others only stand by. So the pools even it out among themselves, with nothing but AMQP:

- Every pool also consumes the *census* queue ``<queue>.pools`` (classic, auto-delete,
  no single active consumer; nothing is published to it). Every ``PROBE_INTERVAL``
  seconds a pool passive-declares it: its ``consumer_count`` is the number of pools.
  (A partition queue's own count does not do: a quorum queue counts only its active
  consumer; a classic one counts the waiting ones too, so the largest of those counts
  is taken as well.) The fair share is ``ceil(partitions / pools)``.
- A partition is *active here* once a delivery arrived for its consumer (the broker does
  not tell a consumer over AMQP that it became the active one).
- When a pool is active on more partitions than its share, the next task it finishes on
  one of them hands that partition back: after the handler returned and *before* the
  message is settled, the partition's consumer is cancelled (prefetch is 1 and the
  message is still unacked, so the broker sent nothing after it); then the message is
  settled (acked) and the partition consumed again, at the back of the broker's waiting
  list. The broker makes the next waiting consumer active, and it receives the message
  after the one that just ran: two tasks of a key never run at once, and they stay in
  order. Each partition has a channel of its own.
- Only quorum partitions (the default) are handed back. On RabbitMQ 3.10 and 3.11,
  switching the single active consumer of a *classic* queue while publishers send
  crashes the queue (rabbitmq-server #5460, fixed in 3.12 by "CQ: Remove an assert
  causing issues on SAC switch"), whether by a cancel or a closed channel; quorum
  queues are not affected. A quorum queue also returns the message of a closed channel
  *after* activating the next consumer, which may then run a later message first: so a
  hand-back cancels before the ack and never closes a channel with a message in flight.

States (``_lock`` guards them; the I/O thread only adds to ``_active``, never waits
for the lock, because a broker call made under the lock may need the I/O thread): a
partition is *consumed* (in ``_consumers``), *active* (also in ``_active``) or *missing*
(in ``_missing``: its consume failed, e.g. during a reconnect, and the probe thread tries
again). Once closed, nothing is consumed again.

Limits: a hand-back pauses the partition for a broker round trip or two; the share is
computed per pool, not per worker; pools learn of each other only
through the probe, so spreading takes a probe interval or two and happens only while
tasks flow; a partition that sees no task is never counted as active.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable

from hutch._amqp import ChannelApi, Delivery
from hutch._exceptions import HutchError
from hutch._topology import Queue

__all__ = ["PROBE_INTERVAL", "PartitionConsumers"]

log = logging.getLogger("hutch")

#: Seconds between two counts of the pools consuming the partitions.
PROBE_INTERVAL = 1.0


class PartitionConsumers:
    """One consumer (prefetch 1) per partition queue, handed back when over the fair share.

    Args:
        names: The partition queues, in order.
        open_channel: Opens a new channel of the pool's connection.
        census: The queue every pool consumes, so that the pools can be counted.
        pool: The pool's name, for logs.
        timeout: Seconds allowed for each broker operation.
        stopping: Set once the pool starts nothing new (nothing is consumed again).
        on_cancel: Called with the queue's name when the broker cancels a consumer.
        interval: Seconds between two probes.
        rebalance: Hand partitions back (quorum partitions only: see the module's notes).
    """

    def __init__(
        self,
        names: list[str],
        open_channel: Callable[[], ChannelApi],
        *,
        census: str,
        pool: str,
        timeout: float,
        stopping: threading.Event,
        on_cancel: Callable[[str], None],
        interval: float = PROBE_INTERVAL,
        rebalance: bool = True,
    ) -> None:
        self.names = names
        self.open_channel = open_channel
        self.census = census
        self.pool = pool
        self.timeout = timeout
        self.stopping = stopping
        self.on_cancel = on_cancel
        self.interval = interval
        self.rebalance = rebalance
        #: The pools seen consuming the partitions at the last probe (this one included).
        self.pools = 1
        #: Partitions handed back to other pools so far.
        self.handed_back = 0
        self._lock = threading.Lock()
        self._closed = False
        self._feeds: dict[int, Callable[[Delivery], None]] = {}
        self._channels: dict[int, ChannelApi] = {}  # partition -> its own channel
        self._consumers: dict[int, str] = {}  # partition -> consumer tag
        self._by_tag: dict[str, int] = {}
        self._active: set[int] = set()
        self._missing: set[int] = set()
        self._released: dict[str, int] = {}  # cancelled consumer's tag -> its partition
        self._probe: ChannelApi | None = None
        self._thread: threading.Thread | None = None

    @property
    def share(self) -> int:
        """The partitions this pool may hold: ``ceil(partitions / pools)``."""
        return math.ceil(len(self.names) / max(1, self.pools))

    @property
    def active(self) -> frozenset[int]:
        """The partitions a delivery arrived for since they were last consumed."""
        with self._lock:
            return frozenset(self._active)

    def consume(self, partition: int, feed: Callable[[Delivery], None]) -> None:
        """Consume one partition on a channel of its own (prefetch 1), deliveries to ``feed``."""
        with self._lock:
            self._feeds[partition] = feed
            self._consume_locked(partition)

    def _consume_locked(self, p: int) -> None:
        feed = self._feeds[p]
        channel = self._channels.get(p)
        if channel is None:
            channel = self._channels[p] = self.open_channel()
            channel.qos(1, timeout=self.timeout)  # per consumer: global_qos=False

        def deliver(delivery: Delivery) -> None:  # I/O thread: takes no lock
            self._active.add(p)  # atomic; no delivery reaches a cancelled consumer
            feed(delivery)

        tag = channel.consume(
            self.names[p], deliver, on_cancel=self.on_cancel, timeout=self.timeout
        )
        self._consumers[p] = tag
        self._by_tag[tag] = p
        self._missing.discard(p)

    def start_probe(self, channel: ChannelApi) -> None:
        """Join the census on ``channel``; count the pools every ``interval`` seconds there.

        Args:
            channel: A channel of the pool's own (the probe thread's).
        """
        channel.declare([Queue(self.census, durable=False, auto_delete=True)], self.timeout)
        channel.qos(1, timeout=self.timeout)
        channel.consume(self.census, _ignore, on_cancel=self.on_cancel, timeout=self.timeout)
        self._probe = channel
        self._thread = threading.Thread(
            target=self._run_probe, name=f"hutch-partitions-{self.pool}", daemon=True
        )
        self._thread.start()

    def _run_probe(self) -> None:
        while not self.stopping.wait(self.interval):
            self.probe()

    def probe(self) -> None:
        """Count the pools now, and consume again the partitions whose consume failed."""
        channel = self._probe
        if channel is None:
            return
        try:
            counts = [
                channel.consumer_count(n, timeout=self.timeout) for n in [self.census, *self.names]
            ]
        except HutchError as exc:
            log.debug("hutch: counting the consumers of the partitions failed: %s", exc)
        else:
            self.pools = max(1, *counts)
        with self._lock:
            for p in sorted(self._missing):
                if self._closed:
                    return
                try:
                    self._consume_locked(p)
                except HutchError as exc:
                    log.debug("hutch: consuming partition %s again failed: %s", p, exc)

    def before_settle(self, delivery: Delivery) -> None:
        """Cancel the delivery's consumer if this pool holds more than its share.

        Called on the worker thread once the handler finished, before the delivery is
        settled: the message is still unacked, so with prefetch 1 the broker has sent
        nothing after it, and the cancel leaves nothing in flight here. The broker makes
        the next waiting consumer active; it receives the message after this one, which
        already ran.
        """
        p = self._by_tag.get(delivery.consumer_tag)
        if not self.rebalance or p is None or self.stopping.is_set():
            return
        with self._lock:
            share, held = self.share, len(self._active)
            if self._closed or p not in self._active or held <= share:
                return
            self._active.discard(p)
            tag = self._consumers.pop(p)
            self._by_tag.pop(tag, None)
            self._released[tag] = p
            channel = self._channels[p]
        log.info(
            "hutch: pool %r hands partition %s back (active on %d, fair share %d of %d pools)",
            self.pool,
            self.names[p],
            held,
            share,
            self.pools,
        )
        try:
            channel.cancel(tag, timeout=self.timeout)
        except HutchError as exc:
            log.debug("hutch: handing partition %s back failed: %s", p, exc)
        self.handed_back += 1

    def after_settle(self, delivery: Delivery) -> None:
        """Consume a partition handed back by :meth:`before_settle` again, once settled.

        The new consumer waits at the back of the broker's waiting list.
        """
        with self._lock:
            p = self._released.pop(delivery.consumer_tag, None)
            if p is None or self._closed:
                return
            try:
                self._consume_locked(p)
            except HutchError as exc:
                self._missing.add(p)  # the probe thread tries again
                log.debug("hutch: consuming partition %s again failed: %s", p, exc)

    def close(self) -> None:
        """Consume nothing again (the consumers stay until :meth:`join` closes them)."""
        with self._lock:
            self._closed = True

    def join(self, timeout: float) -> None:
        """Once the workers finished: stop the probe, close every partition's channel.

        Closing (not cancelling) hands each partition to the next pool at once; a message
        prefetched and not started is requeued at its place.

        Args:
            timeout: Seconds allowed for each step.
        """
        with self._lock:
            self._closed = True
            channels = list(self._channels.values())
        if self._thread is not None:
            self._thread.join(timeout)
        for channel in [*channels, *([self._probe] if self._probe is not None else [])]:
            channel.close(timeout=timeout)


def _ignore(delivery: Delivery) -> None:
    """The census queue's consumer: nothing is published there (a stray stays unacked)."""
