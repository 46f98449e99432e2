"""pika's exceptions mapped to hutch's, most specific first: the one place that does it."""

from __future__ import annotations

import logging

import pika.exceptions as pex

from hutch._channel_errors import channel_closed_error
from hutch._exceptions import (
    AuthenticationError,
    ConnectionBlocked,
    ConnectionLost,
    HutchError,
)

__all__ = ["CONNECTION_ERRORS", "is_lost_socket", "map_pika_error", "root_cause"]

log = logging.getLogger("hutch")


def map_pika_error(exc: BaseException, *, entity: str = "") -> HutchError:
    """Translate a pika exception into hutch's hierarchy (most specific first).

    Args:
        exc: The exception pika raised.
        entity: What was being acted on, for the error message (e.g. ``"queue 'q'"``).

    Returns:
        The hutch exception to raise ``from exc``.
    """
    if isinstance(exc, HutchError):
        return exc
    if isinstance(exc, (pex.ProbableAuthenticationError, pex.AuthenticationError)):
        return AuthenticationError(
            "the broker refused the credentials (ACCESS_REFUSED): check user name and password"
        )
    if isinstance(exc, pex.ProbableAccessDeniedError):
        return AuthenticationError(
            "the broker refused access to the virtual host: "
            "check the vhost and the user's permissions"
        )
    if isinstance(exc, pex.ConnectionClosedByBroker) and exc.reply_code in (403, 530):
        # 403 ACCESS_REFUSED, 530 NOT_ALLOWED (e.g. the vhost is gone): retrying cannot help
        return AuthenticationError(f"the broker refused the connection: {exc.reply_text}")
    if isinstance(exc, pex.ConnectionBlockedTimeout):
        return ConnectionBlocked("the broker blocked the connection for too long (resource alarm)")
    if isinstance(exc, pex.ChannelClosed):
        return channel_closed_error(exc.reply_code, exc.reply_text, entity=entity)
    if isinstance(exc, (pex.AMQPConnectionError, OSError)) or is_lost_socket(exc):
        return ConnectionLost(f"connection lost: {type(exc).__name__}: {exc}")
    return HutchError(f"unexpected pika error: {type(exc).__name__}: {exc}")


def is_lost_socket(exc: BaseException) -> bool:
    """Whether ``exc`` is pika's ValueError for a socket that died while it connected.

    pika (1.3 and 1.4) checks a freshly connected socket with ``getpeername()``; when the
    peer reset it in between (a proxy or load balancer that accepts and drops), the check
    raises ``ValueError("Expected connected socket ...")`` while handling the ``OSError``,
    out of ``BlockingConnection()``, instead of reporting a failed attempt. It is one: the
    next attempt may well succeed.
    """
    return isinstance(exc, ValueError) and isinstance(exc.__context__, OSError)


def root_cause(exc: BaseException) -> str:
    seen = exc
    while True:
        # pika wraps socket errors: AMQPConnectionError(AMQPConnectorSocketConnectError(
        # exception=ConnectionRefusedError(...)))
        nxt = seen.__cause__ or getattr(seen, "exception", None)
        if nxt is None and seen.args and isinstance(seen.args[0], BaseException):
            nxt = seen.args[0]
        if not isinstance(nxt, BaseException) or nxt is seen:
            break
        seen = nxt
    text = str(seen) or type(seen).__name__
    return f"{type(seen).__name__}: {text}" if text != type(seen).__name__ else text


#: What a dead connection raises (pika's own, or the socket's).
CONNECTION_ERRORS = (pex.AMQPConnectionError, pex.ConnectionWrongStateError, OSError)
