"""hutch._signals.graceful_signals, in this process (no broker)."""

from __future__ import annotations

import os
import signal
import threading
from types import FrameType

import pytest

from hutch import Connection, RpcServer, Subscriber, WorkerPool
from hutch._signals import graceful_signals

pytestmark = pytest.mark.timeout(30)


def mine(_signum: int, _frame: FrameType | None) -> None:
    raise AssertionError("the caller's own handler must not run inside the block")


@pytest.fixture
def own_handlers() -> object:
    before = {s: signal.signal(s, mine) for s in (signal.SIGTERM, signal.SIGINT)}
    yield
    for s, old in before.items():
        signal.signal(s, old)


@pytest.mark.usefixtures("own_handlers")
@pytest.mark.parametrize("first", [signal.SIGTERM, signal.SIGINT])
@pytest.mark.parametrize("second", [signal.SIGTERM, signal.SIGINT])
def test_first_signal_stops_second_aborts_then_handlers_restored(
    first: signal.Signals, second: signal.Signals
) -> None:
    stopped = threading.Event()
    with pytest.raises(KeyboardInterrupt), graceful_signals(stopped.set, "test"):
        os.kill(os.getpid(), first)
        assert stopped.wait(5)  # stop() ran (on a helper thread)
        os.kill(os.getpid(), second)
        threading.Event().wait(5)  # interrupted by the second signal
        pytest.fail("the second signal did not abort")
    assert signal.getsignal(signal.SIGTERM) is mine
    assert signal.getsignal(signal.SIGINT) is mine


@pytest.mark.usefixtures("own_handlers")
def test_disabled_or_off_the_main_thread_installs_nothing() -> None:
    with graceful_signals(lambda: None, "test", enabled=False):
        assert signal.getsignal(signal.SIGTERM) is mine
    seen: list[object] = []

    def elsewhere() -> None:
        with graceful_signals(lambda: None, "test"):
            seen.append(signal.getsignal(signal.SIGTERM))

    t = threading.Thread(target=elsewhere)
    t.start()
    t.join()
    assert seen == [mine]


def _ignore(body: object) -> None:
    """A handler and procedure (a builtin such as print has no signature on Python 3.10)."""


@pytest.mark.parametrize("bad", [1, "yes", None, 0.0])
def test_handle_signals_must_be_a_bool(bad: object) -> None:
    conn = Connection("amqp://127.0.0.1:1/")  # never opened: the check comes first
    with pytest.raises(TypeError, match="handle_signals"):
        Subscriber(conn, queue="q").run(_ignore, handle_signals=bad)  # type: ignore[arg-type]
    server = RpcServer(conn, queue="q")
    server.register(_ignore, name="p")
    with pytest.raises(TypeError, match="handle_signals"):
        server.run(handle_signals=bad)  # type: ignore[arg-type]
    pool = WorkerPool(conn, queue="q", handler=_ignore)
    with pytest.raises(TypeError, match="handle_signals"):
        pool.run(handle_signals=bad)  # type: ignore[arg-type]
