"""hutch's test harness: a throwaway RabbitMQ broker for your own test suite.

Installed with ``pip install hutch[testing]`` and registered through the ``pytest11`` entry
point, so its fixtures are available without any import:

* ``hutch_broker`` (session): the :class:`Broker`, with fault injection
  (``close_connections``, ``stop``, ``start``, ``restart``, ``rabbitmqctl``).
* ``amqp_url`` (session): its URL.
* ``hutch_connection``: an open :class:`~hutch.Connection`, closed after the test.
* ``unique_name``: a name unique to the test, for queues and exchanges.

Outside pytest, :func:`throwaway_broker` gives scripts and demos the same broker.

:func:`run_cli` runs the ``hutch`` command line in the test's process (so it reaches a
memory broker). :func:`settle` lets time pass for the broker: a sleep on RabbitMQ, and on
the memory broker (``--hutch-broker=memory``, ``hutch_memory_connection``) as long as the
broker still has something to do, with the TTLs, delays and retry backoffs due in the
window brought forward: often no time at all.

Where the broker comes from, in this order: the URL in ``HUTCH_TEST_AMQP_URL``;
testcontainers' RabbitMQ container when a Docker engine answers; otherwise a local
``rabbitmq-server`` node started in a temporary directory on free ports (installed with
apt-get when missing only if ``HUTCH_TEST_INSTALL_BROKER=1``, as root on Debian). pytest's
report header names the broker. A test that needs a broker and cannot get one stops the
session with one line saying how to get one; it is never skipped silently.

The package, one module per concept:

* ``_plugin``: the fixtures and pytest hooks;
* ``_acquire``: choosing the broker (:func:`acquire_broker`, :func:`throwaway_broker`);
* ``_base``: the :class:`Broker` interface; ``_errors``: :class:`BrokerError` and kin;
* ``_external`` (a URL), ``_local`` (a private node), ``_cluster`` (several nodes),
  ``_container`` (Docker); ``_install``: finding or installing ``rabbitmq-server``;
* ``_util``: ports, TCP probes, redaction; ``_settle``: :func:`settle`; ``_cli``:
  :func:`run_cli`. Only ``_plugin``, ``_settle`` and ``_cli`` import the rest of hutch.

Example:
    >>> def test_roundtrip(hutch_connection, unique_name):  # doctest: +SKIP
    ...     q = hutch.Queue(unique_name, durable=False, auto_delete=True)
    ...     hutch.Publisher(hutch_connection, declare=[q]).publish(b"x", routing_key=q.name)
"""

from __future__ import annotations

from hutch.testing._acquire import acquire_broker, throwaway_broker
from hutch.testing._base import Broker
from hutch.testing._cli import run_cli
from hutch.testing._cluster import LocalCluster
from hutch.testing._container import ContainerBroker
from hutch.testing._errors import (
    BrokerControlError,
    BrokerError,
    BrokerStartError,
    BrokerUnavailable,
)
from hutch.testing._external import ExternalBroker
from hutch.testing._local import LocalBroker, TlsFiles
from hutch.testing._plugin import (
    amqp_url,
    hutch_broker,
    hutch_connection,
    hutch_memory_connection,
    unique_name,
)
from hutch.testing._plugin import (
    pytest_addoption as pytest_addoption,
)
from hutch.testing._plugin import (
    pytest_collection_modifyitems as pytest_collection_modifyitems,
)
from hutch.testing._plugin import (
    pytest_configure as pytest_configure,
)
from hutch.testing._plugin import (
    pytest_report_header as pytest_report_header,
)
from hutch.testing._plugin import (
    pytest_terminal_summary as pytest_terminal_summary,
)
from hutch.testing._settle import settle

__all__ = [
    "Broker",
    "BrokerControlError",
    "BrokerError",
    "BrokerStartError",
    "BrokerUnavailable",
    "ContainerBroker",
    "ExternalBroker",
    "LocalBroker",
    "LocalCluster",
    "TlsFiles",
    "acquire_broker",
    "amqp_url",
    "hutch_broker",
    "hutch_connection",
    "hutch_memory_connection",
    "run_cli",
    "settle",
    "throwaway_broker",
    "unique_name",
]
