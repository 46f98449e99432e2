"""A broker hutch did not start, named by a URL: usable, not controllable."""

from __future__ import annotations

from urllib.parse import urlsplit

from hutch.testing._base import Broker
from hutch.testing._errors import BrokerControlError
from hutch.testing._util import URL_ENV, redact

__all__ = ["ExternalBroker"]


class ExternalBroker(Broker):
    """A broker hutch did not start, named by a URL (usually ``HUTCH_TEST_AMQP_URL``).

    Tests can connect to it, but fault injection (``rabbitmqctl``, :meth:`stop`,
    :meth:`start`, :meth:`close_connections`) raises :class:`BrokerControlError`,
    because hutch cannot reach the node behind the URL. :meth:`close` does nothing
    to the broker.

    Args:
        url: An ``amqp://`` or ``amqps://`` URL.

    Raises:
        ValueError: ``url`` is not an AMQP URL.
    """

    supports_control = False

    def __init__(self, url: str) -> None:
        scheme = urlsplit(url).scheme
        if scheme not in ("amqp", "amqps"):
            raise ValueError(f"not an AMQP URL (amqp:// or amqps://): {redact(url)!r}")
        self._url = url

    @property
    def url(self) -> str:
        """The URL given to the constructor."""
        return self._url

    def _refuse(self, what: str) -> BrokerControlError:
        return BrokerControlError(
            f"cannot {what}: the broker at {redact(self._url)} was not started by hutch. "
            f"Fault injection needs a broker hutch starts itself: unset {URL_ENV} and let "
            "hutch start a container (Docker) or a local rabbitmq-server node."
        )

    def rabbitmqctl(self, *args: str, timeout: float = 30.0) -> str:
        """Always raises: an external broker cannot be controlled.

        Args:
            *args: Ignored.
            timeout: Ignored.

        Returns:
            Never returns.

        Raises:
            BrokerControlError: Always.
        """
        raise self._refuse("run rabbitmqctl")

    def stop(self) -> None:
        """Always raises: an external broker cannot be stopped.

        Raises:
            BrokerControlError: Always.
        """
        raise self._refuse("stop the broker")

    def start(self) -> None:
        """Always raises: an external broker cannot be started.

        Raises:
            BrokerControlError: Always.
        """
        raise self._refuse("start the broker")

    def close_connections(
        self, name_contains: str | None = None, reason: str = "closed by test"
    ) -> int:
        """Always raises: hutch cannot close connections on an external broker.

        Args:
            name_contains: Ignored.
            reason: Ignored.

        Returns:
            Never returns.

        Raises:
            BrokerControlError: Always.
        """
        raise self._refuse("close connections from the broker side")

    def close(self) -> None:
        """Forget the broker; it keeps running."""
