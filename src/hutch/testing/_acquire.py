"""Choosing the broker for a test session or a script.

:func:`acquire_broker` picks, in order:

1. the broker named by ``HUTCH_TEST_AMQP_URL`` (:class:`ExternalBroker`; no fault
   injection possible),
2. a container, when a Docker engine answers and ``testcontainers`` is installed
   (:class:`ContainerBroker`),
3. a private node of a locally installed ``rabbitmq-server`` (:class:`LocalBroker`),
   installing the Debian package with ``apt-get`` only when ``HUTCH_TEST_INSTALL_BROKER=1``.

``HUTCH_TEST_BROKER`` (``auto``, ``docker`` or ``local``) forces step 2 or 3.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from urllib.parse import urlsplit

from hutch.testing._base import Broker
from hutch.testing._container import ContainerBroker, docker_engine_answers
from hutch.testing._errors import BrokerError, BrokerUnavailable
from hutch.testing._external import ExternalBroker
from hutch.testing._install import (
    HOW_TO_GET_A_BROKER,
    bin_dir,
    can_install,
    local_server_installed,
    why_not_install,
)
from hutch.testing._local import LocalBroker
from hutch.testing._util import KIND_ENV, URL_ENV, redact, tcp_accepts

__all__ = ["acquire_broker", "throwaway_broker"]

_log = logging.getLogger("hutch.testing")


def acquire_broker() -> Broker:
    """Return a started broker for tests, the best this machine offers.

    Order: ``HUTCH_TEST_AMQP_URL`` (an :class:`ExternalBroker`, checked to accept
    TCP connections); a Docker engine (:class:`ContainerBroker`); a local
    ``rabbitmq-server`` node (:class:`LocalBroker`), installed with ``apt-get``
    when missing only if ``HUTCH_TEST_INSTALL_BROKER=1`` (as root on Debian); also
    when the container fails to start (logged
    as a warning). ``HUTCH_TEST_BROKER=docker`` or ``local`` allows only that
    kind. The caller owns the broker and must :meth:`~Broker.close` it.

    Returns:
        A broker that accepts AMQP connections at :attr:`~Broker.url`.

    Raises:
        BrokerUnavailable: No broker can be had; the message says how to get one.
        BrokerStartError: A broker was found but did not start.
        ValueError: ``HUTCH_TEST_AMQP_URL`` or ``HUTCH_TEST_BROKER`` is malformed.

    Example:
        >>> with acquire_broker() as broker:  # doctest: +SKIP
        ...     print(broker.url)
    """
    url = os.environ.get(URL_ENV, "").strip()
    if url:
        external = ExternalBroker(url)
        parts = urlsplit(url)
        port = parts.port or (5671 if parts.scheme == "amqps" else 5672)
        if not tcp_accepts(parts.hostname or "localhost", port, timeout=5.0):
            raise BrokerUnavailable(f"{URL_ENV}={redact(url)} does not accept TCP connections")
        _log.info("using the external broker %s", redact(url))
        return external

    kind = os.environ.get(KIND_ENV, "auto").strip().lower() or "auto"
    if kind not in ("auto", "docker", "local"):
        raise ValueError(f"{KIND_ENV} must be auto, docker or local, got {kind!r}")

    if kind in ("auto", "docker"):
        if docker_engine_answers():
            container = ContainerBroker()
            try:
                container.start()
            except BrokerError as exc:
                container.close()
                if kind == "docker" or not (local_server_installed() or can_install()):
                    raise
                _log.warning("RabbitMQ container failed (%s); using a local node instead", exc)
            except BaseException:
                container.close()
                raise
            else:
                return container
        if kind == "docker":
            raise BrokerUnavailable(
                f"{KIND_ENV}=docker but no Docker engine answers (or testcontainers is "
                f"not installed). {HOW_TO_GET_A_BROKER}"
            )

    if not local_server_installed():
        refusal = why_not_install()
        if refusal is not None:
            raise BrokerUnavailable(
                f"no RabbitMQ broker available: no Docker engine, no {URL_ENV}, and no "
                f"rabbitmq-server in {bin_dir()} ({refusal}). {HOW_TO_GET_A_BROKER}"
            )
    local = LocalBroker()
    try:
        local.start()
    except BaseException:
        local.close()
        raise
    return local


@contextlib.contextmanager
def throwaway_broker() -> Iterator[str]:
    """A RabbitMQ broker for a script, found or started like the test fixtures' one.

    ``HUTCH_TEST_AMQP_URL`` if set, else a Docker container, else a private local
    ``rabbitmq-server`` node (installed with apt-get only when ``HUTCH_TEST_INSTALL_BROKER=1``,
    as root on Debian). A broker started here is stopped and its files removed when the
    block exits.

    Yields:
        The broker's ``amqp://`` URL.

    Raises:
        BrokerError: No broker can be had (the message says how to get one), or one did
            not start. A test-harness error, not a :class:`~hutch.HutchError`.

    Example:
        >>> with throwaway_broker() as url:  # doctest: +SKIP
        ...     with hutch.connect(url) as conn:
        ...         ...
    """
    with acquire_broker() as broker:
        yield broker.url
