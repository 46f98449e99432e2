"""The worker pool, split by concept.

===============  ===================================================================
``pool``         :class:`WorkerPool`: start, run, stop, submit; ``load_handler``
``worker``       one worker: its inbox, its thread, its counters
``process``      the child-process protocol of ``processes=True`` (JSON and bytes)
``outcome``      what an attempt came to: :class:`OutcomeKind`, :class:`Outcome`
``routing``      failure routing: the pure ``decide`` and the ``FailureRouter``
``stats``        :class:`WorkerStats`, :class:`PoolStats`
``task_queue``   :class:`TaskQueue`
===============  ===================================================================
"""

from __future__ import annotations

from hutch._worker_pool.pool import WorkerPool, load_handler
from hutch._worker_pool.stats import PoolStats, WorkerStats
from hutch._worker_pool.task_queue import TaskQueue

__all__ = [
    "PoolStats",
    "TaskQueue",
    "WorkerPool",
    "WorkerStats",
    "load_handler",
]
