"""Counters of a worker pool: :class:`WorkerStats` per worker, :class:`PoolStats` in all."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PoolStats", "WorkerStats", "summary"]


@dataclass(frozen=True)
class WorkerStats:
    """What one worker (one consumer) of a pool did so far.

    Attributes:
        worker: The worker's index, 0 to ``concurrency - 1``.
        channel: Index of the channel its consumer is on.
        consumer_tag: Its consumer tag (also :attr:`Message.consumer_tag` in handlers).
        pid: The child process running its handlers (``processes=True``), else None.
        processed: Messages handled successfully and acked.
        failed: Failed attempts (handler raised, body invalid, child process died).
        retried: Messages sent to a delay queue for another attempt.
        dead_lettered: Messages sent to the dead-letter queue.
        requeued: Messages handed back to the broker: unstarted (shutdown, child crash),
            or failed but their copy for the dead-letter or a delay queue could not be
            placed (requeued after a pause, never acked).
        crashed: Child processes that died under this worker.
        busy_seconds: Time spent handling messages.
    """

    worker: int
    channel: int
    consumer_tag: str
    pid: int | None
    processed: int
    failed: int
    retried: int
    dead_lettered: int
    requeued: int
    crashed: int
    busy_seconds: float


@dataclass(frozen=True)
class PoolStats:
    """A snapshot of a pool's counters; the totals sum over :attr:`workers`.

    Attributes:
        workers: One entry per worker.
    """

    workers: tuple[WorkerStats, ...] = ()

    @property
    def processed(self) -> int:
        """Messages handled successfully and acked."""
        return sum(w.processed for w in self.workers)

    @property
    def failed(self) -> int:
        """Failed attempts."""
        return sum(w.failed for w in self.workers)

    @property
    def retried(self) -> int:
        """Messages sent to a delay queue for another attempt."""
        return sum(w.retried for w in self.workers)

    @property
    def dead_lettered(self) -> int:
        """Messages sent to the dead-letter queue."""
        return sum(w.dead_lettered for w in self.workers)

    @property
    def requeued(self) -> int:
        """Messages handed back to the broker unstarted."""
        return sum(w.requeued for w in self.workers)

    @property
    def crashed(self) -> int:
        """Child processes that died mid-task."""
        return sum(w.crashed for w in self.workers)


def summary(stats: PoolStats) -> str:
    """One line for the log: what a pool did.

    Args:
        stats: The pool's counters.

    Returns:
        The line.
    """
    return (
        f"{stats.processed} processed, {stats.retried} retried, "
        f"{stats.dead_lettered} dead-lettered, {stats.requeued} requeued, "
        f"{stats.failed} failed attempts"
    )
