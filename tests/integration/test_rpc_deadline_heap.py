"""RpcClient's deadline heap holds O(calls in flight), not O(call rate x timeout) (issue 10)."""

from __future__ import annotations

import pytest

from hutch import Connection, RpcClient, RpcServer

pytestmark = pytest.mark.timeout(300)

# 10 rounds of 200: unpruned, the heap would hold all 2,000 entries, four times the bound
CALLS = 2_000
IN_FLIGHT = 200
BOUND = 2 * IN_FLIGHT + 64 + 1


def test_deadline_heap_stays_bounded_by_calls_in_flight(conn: Connection, unique_name: str) -> None:
    server = RpcServer(conn, queue=unique_name, concurrency=2)

    @server.procedure
    def echo(x: int) -> int:
        return x

    with server.start(), RpcClient(conn, queue=unique_name, timeout=60) as client:
        largest = 0
        for _ in range(0, CALLS, IN_FLIGHT):
            futures = [client.call_async("echo", i, timeout=60) for i in range(IN_FLIGHT)]
            assert [f.result(30) for f in futures] == list(range(IN_FLIGHT))
            largest = max(largest, len(client._deadlines))
        # without pruning every entry stays until its 60 s deadline: 2,000 of them
        assert largest <= BOUND, largest
        assert len(client._deadlines) <= BOUND
    server.close()
