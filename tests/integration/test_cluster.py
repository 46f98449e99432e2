"""Failover across a local 3-node RabbitMQ cluster with a quorum queue, counting every message.

Three ``rabbitmq-server`` nodes on this machine are joined into one cluster. A publisher and
a subscriber connect with the list of all three node URLs, so they land on the first node;
that node is stopped in the middle of the stream. Both must fail over to another node,
re-declare, re-consume and republish what was not confirmed: nothing may be lost.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from hutch import Connection, Publisher, Queue, Subscriber
from hutch._broker import BrokerError, LocalCluster
from tests.integration.test_faults import ConsumeLoop, PublishLoop, drain_until_all_received
from tests.reliability import Ledger, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    nodes = LocalCluster(3)
    try:
        nodes.start()
    except BrokerError as exc:
        nodes.close()
        pytest.fail(f"cannot start a local 3-node cluster: {exc}", pytrace=False)
    with nodes:
        yield nodes


def test_cluster_of_three_nodes_is_formed(cluster: LocalCluster) -> None:
    assert sorted(cluster.running_nodes()) == sorted(cluster.node_names)


def test_stop_the_connected_node_mid_stream_fails_over_without_loss(
    cluster: LocalCluster, unique_name: str
) -> None:
    ledger = Ledger("cluster node the clients use stopped (3 nodes, quorum queue)")
    q = Queue(unique_name, queue_type="quorum")
    urls = cluster.urls
    first = cluster.nodes[0]
    with (
        Connection(urls, connection_name=f"{unique_name}-pub") as pc,
        Connection(urls, connection_name=f"{unique_name}-sub") as sc,
    ):
        ledger.clock.watch(pc, sc)
        for conn in (pc, sc):
            assert conn.io.connected_address is not None
            assert conn.io.connected_address.port == first.amqp_port
        with (
            Publisher(pc, routing_key=q.name, model=int, declare=[q]) as pub,
            Subscriber(sc, queue=q, model=int, prefetch=100) as sub,
        ):
            consumer = ConsumeLoop(sub, ledger).start()
            publisher = PublishLoop(pub, ledger, 5000, batch=50, pause=0.02).start()
            assert wait_until(lambda: len(ledger.confirmed) >= 1000, 60)
            first.stop()
            publisher.join(180)
            drain_until_all_received(ledger, 60)
            consumer.stop()
        for conn in (pc, sc):
            assert conn.recoveries >= 1
            assert conn.io.connected_address is not None
            assert conn.io.connected_address.port != first.amqp_port
        pc.channel().delete_queue(q.name)
    ledger.record()
    ledger.assert_nothing_lost()
    assert ledger.clock.longest is not None and ledger.clock.longest < 60
