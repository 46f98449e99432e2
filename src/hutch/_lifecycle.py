"""One lifecycle state for every hutch resource.

Every resource (Publisher, Subscriber, RpcClient, RpcServer, WorkerPool, TaskQueue, the
channel, the test brokers, the metrics server) records where it is in its life with one
:class:`Lifecycle` value held by a :class:`LifecycleState`. The connection's driver
derives its finer :class:`~hutch._amqp.ownership_rules.ConnState` from its own fields
(they are read on the hot path without a lock) and maps it onto :class:`Lifecycle` with
:func:`~hutch._amqp.ownership_rules.lifecycle_of`.

The states and the moves between them::

    NEW ──────► OPENING ──► OPEN ──► CLOSING ──► CLOSED
     │  ▲          │          │         │           ▲
     │  └──────────┘          │         ▼           │
     │  (open failed:         └──────► FAILED ──────┘
     │   may be tried again)
     └──────────────────────────────────────────────► CLOSED / CLOSING

======== ===================================================== =========================
state    meaning                                               use (``check_usable``)
======== ===================================================== =========================
NEW      constructed, no I/O yet (lazy resources open on use)  allowed
OPENING  ``open()``/``start()`` in progress                    allowed
OPEN     usable (a pool or a server: running)                  allowed
CLOSING  ``close()``/``stop()`` in progress: nothing new starts ClosedError
CLOSED   released                                              ClosedError
FAILED   ended by an error (kept in ``failure``)               that error
======== ===================================================== =========================

Invariants:

* ``CLOSED`` is final; moving to ``CLOSING`` or ``CLOSED`` again is a no-op that returns
  False, which is what makes every ``close()`` idempotent.
* A move that is not in :data:`TRANSITIONS` is a bug in hutch and raises
  :class:`LifecycleError`; it never happens because of what a user does.
* ``failure`` is set only together with ``FAILED`` and kept after ``CLOSED``.

:class:`LifecycleState` takes no lock: a resource changes it under its own lock (the
check-then-move of ``close()`` must be atomic with the resource's other fields); reading
``state`` or ``closed`` from any thread is safe (one attribute read).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

from hutch._exceptions import ClosedError, HutchError

__all__ = ["TRANSITIONS", "Lifecycle", "LifecycleError", "LifecycleState", "can_move"]


class Lifecycle(enum.Enum):
    """Where a resource is in its life (see the module's table)."""

    NEW = "new"
    OPENING = "opening"
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"
    FAILED = "failed"


_NEW, _OPENING, _OPEN = Lifecycle.NEW, Lifecycle.OPENING, Lifecycle.OPEN
_CLOSING, _CLOSED, _FAILED = Lifecycle.CLOSING, Lifecycle.CLOSED, Lifecycle.FAILED

#: The legal moves: state -> the states it may move to.
TRANSITIONS: Mapping[Lifecycle, frozenset[Lifecycle]] = {
    _NEW: frozenset({_OPENING, _OPEN, _CLOSING, _CLOSED}),
    _OPENING: frozenset({_NEW, _OPEN, _CLOSING, _CLOSED, _FAILED}),
    _OPEN: frozenset({_CLOSING, _CLOSED, _FAILED}),
    _CLOSING: frozenset({_CLOSED, _FAILED}),
    _FAILED: frozenset({_CLOSING, _CLOSED}),
    _CLOSED: frozenset(),
}

# states in which a resource refuses new work
_ENDING = frozenset({_CLOSING, _CLOSED, _FAILED})


def can_move(current: Lifecycle, to: Lifecycle) -> bool:
    """Whether ``current -> to`` is a legal move (staying put is not a move)."""
    return to in TRANSITIONS[current]


class LifecycleError(HutchError):
    """An illegal lifecycle move: a bug in hutch, never the user's doing."""


class LifecycleState:
    """The lifecycle of one resource (no lock of its own; see the module docstring).

    Args:
        what: How errors name the resource, e.g. ``"the publisher"``.
        closed_text: The :class:`~hutch.ClosedError` message for use after close
            (default ``"<what> is closed"``).
    """

    __slots__ = ("_closed_text", "closed", "failure", "state", "what")

    def __init__(self, what: str, closed_text: str | None = None) -> None:
        self.what = what
        self._closed_text = closed_text or f"{what} is closed"
        #: The current state; only :meth:`move` and :meth:`fail` change it.
        self.state = Lifecycle.NEW
        #: True from ``CLOSING`` on (``CLOSING``, ``CLOSED``, ``FAILED``): nothing new starts.
        self.closed = False
        #: The error that ended the resource (with ``FAILED``).
        self.failure: HutchError | None = None

    def __repr__(self) -> str:
        return f"<LifecycleState {self.what} {self.state.value}>"

    def move(self, to: Lifecycle) -> bool:
        """Move to ``to``.

        Args:
            to: The new state.

        Returns:
            True if the state changed; False if it was ``to`` already, or if ``to`` is
            ``CLOSING``/``CLOSED`` and the resource is closed already (idempotent close).

        Raises:
            LifecycleError: The move is not in :data:`TRANSITIONS` (a bug in hutch).
        """
        current = self.state
        if to is current or (current is _CLOSED and to is _CLOSING):
            return False
        if to not in TRANSITIONS[current]:
            raise LifecycleError(
                f"{self.what}: illegal lifecycle move {current.value} -> {to.value}"
            )
        self.state = to
        self.closed = to in _ENDING
        return True

    def fail(self, error: HutchError) -> bool:
        """Move to ``FAILED`` keeping ``error``; a no-op once closed or failed.

        Args:
            error: What ended the resource.

        Returns:
            True if this call recorded the failure.
        """
        if self.state in (_CLOSED, _FAILED):
            return False
        self.failure = error
        return self.move(_FAILED)

    def check_usable(self) -> None:
        """Raise if the resource may not start new work.

        Raises:
            HutchError: The failure that ended the resource (``FAILED``).
            ClosedError: The resource is closing or closed.
        """
        if self.closed:
            if self.state is _FAILED and self.failure is not None:
                raise self.failure
            raise ClosedError(self._closed_text)

    def check_open(self) -> None:
        """Raise unless the resource is ``OPEN`` (use before open, or after close).

        Raises:
            ClosedError: Not opened yet (``NEW``/``OPENING``), or closing or closed.
        """
        if self.state is not _OPEN:
            self.check_usable()
            raise ClosedError(f"{self.what} is not open yet: open it first or use a with block")

    @property
    def is_open(self) -> bool:
        """True in ``OPEN`` (a pool or a server: running)."""
        return self.state is _OPEN
