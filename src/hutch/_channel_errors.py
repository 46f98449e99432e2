"""A channel the broker closed, as hutch's exception: one reading for every backend.

The pika layer (:mod:`hutch._amqp.errors`) and the in-memory broker (:mod:`hutch._memory`)
both end up with a reply code and RabbitMQ's reply text; this module turns them into the
same :class:`~hutch.ChannelClosed` subclass with the same message, so a test gives the same
exception on either backend. It imports nothing of pika.
"""

from __future__ import annotations

from hutch._exceptions import AccessRefused, ChannelClosed, NotFound, PreconditionFailed

__all__ = ["channel_closed_error"]


def channel_closed_error(code: int, text: str, *, entity: str = "") -> ChannelClosed:
    """The exception for a channel closed with ``code`` and ``text`` (most specific first).

    Args:
        code: The AMQP reply code, e.g. 406.
        text: The broker's reply text, e.g. ``"PRECONDITION_FAILED - inequivalent arg ..."``.
        entity: What was being acted on, for the message (e.g. ``"queue 'q'"``).

    Returns:
        :class:`~hutch.PreconditionFailed` (406), :class:`~hutch.NotFound` (404),
        :class:`~hutch.AccessRefused` (403), else :class:`~hutch.ChannelClosed`.
    """
    if code == 406:
        return PreconditionFailed(code, text, **_describe_406(text, entity))
    if code == 404:
        return NotFound(code, text, message=f"{entity or 'entity'} not found ({code} {text})")
    if code == 403:
        return AccessRefused(code, text)
    return ChannelClosed(code, text)


def _describe_406(text: str, entity: str) -> dict[str, str]:
    # e.g. "PRECONDITION_FAILED - inequivalent arg 'durable' for queue 'q' in vhost '/':
    #       received 'false' but current is 'true'"
    body = text.split(" - ", 1)[-1]
    if " for " in body and "inequivalent arg" in body:
        arg, _, rest = body.partition(" for ")
        ent, _, tail = rest.partition(" in vhost ")
        detail = tail.split(":", 1)[1].strip() if ":" in tail else ""
        return {
            "entity": ent.strip() or entity,
            "differences": f"{arg.strip()}: {detail}".strip(": "),
        }
    return {"entity": entity, "differences": body}
