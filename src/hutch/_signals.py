"""One signal behaviour for every blocking ``run()``: stop gracefully, abort on the second.

:func:`graceful_signals` is what :meth:`~hutch.WorkerPool.run`,
:meth:`~hutch.RpcServer.run` and :meth:`~hutch.Subscriber.run` wrap their loop in. On
the main thread it installs handlers for SIGTERM and SIGINT, and restores the previous
ones on exit:

==============================  ==================================================
signal                          what happens
==============================  ==================================================
the first SIGTERM or SIGINT     ``stop()`` is called: no new work is taken, what is
                                in hand finishes and is acked, ``run()`` returns
                                normally (a process exits 0)
a second one (of either kind)   :class:`KeyboardInterrupt` is raised in the main
                                thread, so it leaves ``run()`` at once; what was in
                                hand is not acked and the broker redelivers it
==============================  ==================================================

This is what the ``hutch worker`` and ``hutch serve`` commands do too (there the
second signal exits with status 130, which is also how Python exits on an uncaught
:class:`KeyboardInterrupt`). Off the main thread, or with ``handle_signals=False``,
nothing is installed (Python only lets the main thread set handlers): stop the
pattern with its ``stop()`` from elsewhere.

``stop()`` is not called in the handler itself but on a short-lived thread: the
handler interrupts the main thread at an arbitrary point, possibly while it holds the
lock of a queue or event that ``stop()`` needs, which would deadlock.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

__all__ = ["SIGNALS", "graceful_signals"]

log = logging.getLogger("hutch")

#: The signals a blocking ``run()`` handles.
SIGNALS = (signal.SIGTERM, signal.SIGINT)


@contextlib.contextmanager
def graceful_signals(
    stop: Callable[[], None], what: str, *, enabled: bool = True
) -> Iterator[None]:
    """Within the block, the first SIGTERM/SIGINT calls ``stop()``, the second aborts.

    Args:
        stop: Asks the running pattern to stop after the work in hand; called on a
            helper thread, so it may block.
        what: What is stopping, for the log lines (e.g. ``"worker pool 'jobs'"``).
        enabled: False installs nothing (the caller's own handlers stay in force).

    Yields:
        Nothing; the handlers are in force until the block ends.

    Raises:
        KeyboardInterrupt: Raised into the block by a second signal.
    """
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield
        return
    seen: list[str] = []

    def handler(signum: int, _frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if seen:
            log.warning(
                "hutch: %s received again: aborting %s; what was in hand is not acked "
                "and the broker redelivers it",
                name,
                what,
            )
            raise KeyboardInterrupt
        seen.append(name)
        log.info(
            "hutch: %s received: %s finishes the work in hand, then stops (send it again to abort)",
            name,
            what,
        )
        threading.Thread(target=stop, name="hutch-signal-stop", daemon=True).start()

    previous: dict[signal.Signals, Any] = {}
    try:
        for sig in SIGNALS:
            previous[sig] = signal.signal(sig, handler)
        yield
    finally:
        for sig, old in previous.items():
            # None: a handler not installed from Python; the default is the best guess
            signal.signal(sig, old if old is not None else signal.SIG_DFL)
