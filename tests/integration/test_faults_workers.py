"""Real faults against WorkerPool, RpcServer and RpcClient, counting every message and call.

Like ``test_faults.py``: the broker node is this module's own, so restarting it cannot
disturb other modules; every scenario keeps a :class:`~tests.reliability.Ledger` and
records it for ``docs/reliability.md``.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable

import pytest

from hutch import (
    Connection,
    ConnectionLost,
    HutchError,
    Message,
    Publisher,
    Queue,
    RpcClient,
    RpcServer,
    WorkerPool,
)
from hutch.testing import LocalBroker
from tests.integration.test_faults import PublishLoop, drain_until_all_received
from tests.reliability import Ledger, wait_until

pytestmark = [
    pytest.mark.timeout(180),
    pytest.mark.rabbitmq_only("kills worker processes and faults a real broker node"),
]


def recording_handler(ledger: Ledger, work: float = 0.0) -> Callable[[int, Message[int]], None]:
    def handle(_body: int, message: Message[int]) -> None:
        if work:
            time.sleep(work)
        ledger.on_received(message.message_id)

    return handle


# ----------------------------------------------------------------------------- WorkerPool
@pytest.mark.timeout(240)
def test_broker_restart_while_10k_messages_are_consumed_by_a_worker_pool(
    fault_broker: LocalBroker, unique_name: str
) -> None:
    ledger = Ledger("broker restarted mid-stream (10,000 persistent msgs, WorkerPool)")
    q = Queue(unique_name, durable=True)
    with (
        Connection(fault_broker.url, connection_name=f"{unique_name}-pub") as pc,
        Connection(fault_broker.url, connection_name=f"{unique_name}-pool") as wc,
    ):
        ledger.clock.watch(pc, wc)
        pool = WorkerPool(
            wc, queue=q, handler=recording_handler(ledger), model=int, concurrency=4, prefetch=50
        )
        with pool, Publisher(pc, routing_key=q.name, model=int, declare=[q]) as pub:
            publisher = PublishLoop(pub, ledger, 10_000, batch=100, pause=0.1).start()
            assert wait_until(lambda: len(ledger.confirmed) >= 3000, 60)
            fault_broker.restart()
            assert len(ledger.confirmed) < 10_000  # the fault struck mid-stream
            publisher.join(120)
            drain_until_all_received(ledger, 60)
            assert pool.is_running and pool.failure is None
        assert pc.recoveries >= 1 and wc.recoveries >= 1
        stats = pool.stats
    ledger.notes = f"pool: {stats.processed} processed, {stats.dead_lettered} dead-lettered"
    ledger.record()
    ledger.assert_nothing_lost()
    assert len(ledger.sent) == 10_000
    assert stats.dead_lettered == 0
    assert ledger.clock.longest is not None and ledger.clock.longest < 60


def test_close_connection_of_worker_pool_while_working(
    fault_broker: LocalBroker, unique_name: str
) -> None:
    ledger = Ledger("close_connection (320) against a WorkerPool")
    q = Queue(unique_name, durable=True)
    with (
        Connection(fault_broker.url, connection_name=f"{unique_name}-pub") as pc,
        Connection(fault_broker.url, connection_name=f"{unique_name}-pool") as wc,
    ):
        ledger.clock.watch(wc)
        pool = WorkerPool(
            wc,
            queue=q,
            handler=recording_handler(ledger, work=0.004),
            model=int,
            concurrency=4,
            prefetch=10,
        )
        with pool, Publisher(pc, routing_key=q.name, model=int, declare=[q]) as pub:
            publisher = PublishLoop(pub, ledger, 5000, batch=50).start()
            assert wait_until(lambda: ledger.received_unique >= 500, 30)
            assert fault_broker.close_connections(f"{unique_name}-pool", "test: force close") == 1
            assert ledger.received_unique < 5000  # the fault struck mid-stream
            publisher.join(60)
            drain_until_all_received(ledger, 30)
            assert pool.is_running and pool.failure is None
        assert wc.recoveries == 1 and pc.recoveries == 0
    ledger.record()
    ledger.assert_nothing_lost()
    assert ledger.clock.longest is not None and ledger.clock.longest < 30


# ------------------------------------------------------------------------------------ RPC
class CallLoop:
    """Calls ``echo(i)`` for each i in ``numbers`` from a thread; retries calls that failed
    with ConnectionLost (the client cannot know whether they ran) until they succeed."""

    def __init__(self, client: RpcClient, ledger: Ledger, numbers: range) -> None:
        self.client = client
        self.ledger = ledger
        self.numbers = numbers
        self.retried = 0
        self.wrong: list[tuple[int, object]] = []
        self.thread = threading.Thread(target=self._run, name="test-rpc-caller", daemon=True)

    def start(self) -> CallLoop:
        self.thread.start()
        return self

    def _run(self) -> None:
        for i in self.numbers:
            mid = f"call-{i}"
            self.ledger.on_sent([mid])
            for _attempt in range(5):
                try:
                    result = self.client.call("echo", i, timeout=30)
                except ConnectionLost:
                    self.retried += 1  # in flight when the link died: call again
                    time.sleep(0.05)
                    continue
                except HutchError as exc:
                    self.ledger.on_publish_error(exc)
                    break
                if result != i:
                    self.wrong.append((i, result))
                self.ledger.on_confirmed([mid])
                self.ledger.on_received(mid)
                break
            else:
                self.ledger.on_publish_error(ConnectionLost(f"call {i} failed 5 times"))

    def join(self, timeout: float) -> None:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "RPC caller stuck"


CALLERS = 4
CALLS = 4000


def _echo_server(conn: Connection, queue: str, executions: Counter[int]) -> RpcServer:
    server = RpcServer(conn, queue=queue, concurrency=CALLERS)
    lock = threading.Lock()

    @server.procedure
    def echo(n: int) -> int:
        time.sleep(0.003)  # so that calls are in flight when the link breaks
        with lock:
            executions[n] += 1
        return n

    return server


def _callers(client: RpcClient, ledger: Ledger) -> list[CallLoop]:
    share = CALLS // CALLERS
    return [
        CallLoop(client, ledger, range(k * share, (k + 1) * share)).start() for k in range(CALLERS)
    ]


def test_close_connection_of_rpc_server_while_serving(
    fault_broker: LocalBroker, unique_name: str
) -> None:
    ledger = Ledger("close_connection (320) against an RpcServer")
    executions: Counter[int] = Counter()
    with (
        Connection(fault_broker.url, connection_name=f"{unique_name}-server") as sc,
        Connection(fault_broker.url, connection_name=f"{unique_name}-client") as cc,
    ):
        ledger.clock.watch(sc)
        with (
            _echo_server(sc, unique_name, executions),
            RpcClient(cc, queue=unique_name, timeout=30) as client,
        ):
            callers = _callers(client, ledger)
            assert wait_until(lambda: len(ledger.confirmed) >= 300, 30)
            assert fault_broker.close_connections(f"{unique_name}-server", "test") == 1
            assert len(ledger.confirmed) < CALLS  # the fault struck mid-stream
            for caller in callers:
                caller.join(120)
        assert sc.recoveries == 1 and cc.recoveries == 0
        sc.channel().delete_queue(unique_name)
    duplicated = sum(n - 1 for n in executions.values() if n > 1)
    ledger.notes = f"{duplicated} calls executed twice by the server (request redelivered)"
    ledger.record()
    ledger.assert_nothing_lost()
    assert all(c.wrong == [] for c in callers)
    assert sum(c.retried for c in callers) == 0  # the client's link never broke
    assert set(executions) == set(range(CALLS))
    assert ledger.clock.longest is not None and ledger.clock.longest < 30


def test_close_connection_of_rpc_client_while_calling(
    fault_broker: LocalBroker, unique_name: str
) -> None:
    ledger = Ledger("close_connection (320) against an RpcClient")
    executions: Counter[int] = Counter()
    with (
        Connection(fault_broker.url, connection_name=f"{unique_name}-server") as sc,
        Connection(fault_broker.url, connection_name=f"{unique_name}-client") as cc,
    ):
        ledger.clock.watch(cc)
        with (
            _echo_server(sc, unique_name, executions),
            RpcClient(cc, queue=unique_name, timeout=30) as client,
        ):
            callers = _callers(client, ledger)
            assert wait_until(lambda: len(ledger.confirmed) >= 300, 30)
            assert fault_broker.close_connections(f"{unique_name}-client", "test") == 1
            assert len(ledger.confirmed) < CALLS  # the fault struck mid-stream
            for caller in callers:
                caller.join(120)
            assert client.call("echo", -1, timeout=10) == -1  # still usable afterwards
        assert cc.recoveries == 1 and sc.recoveries == 0
        sc.channel().delete_queue(unique_name)
    retried = sum(c.retried for c in callers)
    duplicated = sum(n - 1 for n in executions.values() if n > 1)
    ledger.notes = (
        f"{retried} in-flight calls failed with ConnectionLost and were called again; "
        f"{duplicated} of them had run on the server already"
    )
    ledger.record()
    ledger.assert_nothing_lost()
    assert all(c.wrong == [] for c in callers)
    assert set(executions) == set(range(CALLS)) | {-1}
    assert ledger.clock.longest is not None and ledger.clock.longest < 30
