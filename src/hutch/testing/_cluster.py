"""Several local nodes joined into one RabbitMQ cluster."""

from __future__ import annotations

import json
import logging
import os
import secrets
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import TypeVar

from hutch.testing._errors import BrokerControlError, BrokerError, BrokerStartError
from hutch.testing._local import LocalBroker

__all__ = ["LocalCluster"]

_log = logging.getLogger("hutch.testing")

_C = TypeVar("_C", bound="LocalCluster")


class LocalCluster:
    """Several :class:`LocalBroker` nodes on this machine joined into one cluster.

    All nodes share one Erlang cookie. :meth:`start` boots them in parallel and
    joins nodes 1.. to node 0 with ``stop_app`` / ``join_cluster`` / ``start_app``.
    Each node stays individually controllable (stop one, close connections on
    one). Call from one thread at a time.

    Args:
        size: Number of nodes (at least 1).
        base_dir: Parent directory for the nodes' directories (``node-0``, ...);
            default: one temporary directory per node, removed on close.
        extra_config: Lines appended to every node's ``rabbitmq.conf``.
        erlang_cookie: The shared cookie; default a random one.
        startup_timeout: Seconds each node may take to boot, and the cluster to form.

    Raises:
        ValueError: ``size`` is less than 1.

    Example:
        >>> with LocalCluster(3) as cluster:  # doctest: +SKIP
        ...     cluster.nodes[1].stop()
    """

    def __init__(
        self,
        size: int = 3,
        *,
        base_dir: str | None = None,
        extra_config: str = "",
        erlang_cookie: str | None = None,
        startup_timeout: float = 60.0,
    ) -> None:
        if size < 1:
            raise ValueError(f"size must be at least 1, got {size}")
        cookie = erlang_cookie or "".join(
            secrets.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(32)
        )
        self._startup_timeout = startup_timeout
        self._closed = False
        self._started = False
        self.nodes: list[LocalBroker] = [
            LocalBroker(
                base_dir=None if base_dir is None else os.path.join(base_dir, f"node-{i}"),
                extra_config=extra_config,
                erlang_cookie=cookie,
                startup_timeout=startup_timeout,
            )
            for i in range(size)
        ]

    @property
    def urls(self) -> list[str]:
        """The AMQP URL of every node, in node order.

        Raises:
            BrokerError: The cluster never started.
        """
        return [node.url for node in self.nodes]

    @property
    def node_names(self) -> list[str]:
        """The Erlang node name of every node, in node order."""
        return [node.node_name for node in self.nodes]

    @staticmethod
    def _parallel(fn: Callable[[LocalBroker], None], nodes: Iterable[LocalBroker]) -> None:
        todo = list(nodes)
        with ThreadPoolExecutor(max_workers=max(1, len(todo))) as pool:
            futures = [pool.submit(fn, node) for node in todo]
        for future in futures:
            error = future.exception()
            if error is not None:
                raise error

    def running_nodes(self) -> list[str]:
        """Return the running cluster members as node 0 (or the first answering node) sees them.

        Returns:
            Erlang node names.

        Raises:
            BrokerControlError: No node answered.
        """
        last: BrokerControlError | None = None
        for node in self.nodes:
            try:
                out = node.rabbitmqctl("cluster_status", "--formatter", "json")
            except BrokerControlError as exc:
                last = exc
                continue
            running = json.loads(out).get("running_nodes", [])
            return [str(name) for name in running]
        assert last is not None
        raise last

    def start(self) -> None:
        """Start every node and form the cluster; block until all nodes run in it.

        On a later call (after stopping nodes) only restarts the stopped nodes.

        Raises:
            BrokerStartError: A node did not boot, or the cluster did not form.
            BrokerControlError: A clustering command failed.
            BrokerError: The cluster was closed.
        """
        if self._closed:
            raise BrokerError("the cluster is closed")
        if self._started:
            self._parallel(LocalBroker.start, self.nodes)
            return
        began = time.monotonic()
        try:
            self._parallel(LocalBroker.start, self.nodes)
            seed = self.nodes[0].node_name
            for node in self.nodes[1:]:
                node.rabbitmqctl("stop_app")
                node.rabbitmqctl("join_cluster", seed, timeout=60.0)
                node.rabbitmqctl("start_app", timeout=self._startup_timeout)
            deadline = time.monotonic() + self._startup_timeout
            want = set(self.node_names)
            while True:
                running = set(self.running_nodes())
                if want <= running:
                    break
                if time.monotonic() > deadline:
                    raise BrokerStartError(
                        f"cluster did not form: running {sorted(running)}, want {sorted(want)}",
                        log_tail=self.nodes[0]._log_tail(),
                    )
                time.sleep(0.5)
        except BaseException:
            self.close()
            raise
        self._started = True
        _log.info(
            "RabbitMQ cluster of %d nodes formed in %.1f s",
            len(self.nodes),
            time.monotonic() - began,
        )

    def close(self) -> None:
        """Kill every node and remove their temporary directories. Idempotent."""
        self._closed = True
        self._parallel(LocalBroker.close, self.nodes)

    def __enter__(self: _C) -> _C:
        if not self._started:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
