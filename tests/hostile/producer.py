"""A raw pika producer: the client from another language that hutch's consumers must survive."""

from __future__ import annotations

from typing import Any

import pika
import pika.exceptions as pex

from tests.hostile.strategies import raw_field_encoder

__all__ = ["RawProducer"]


class RawProducer:
    """Publishes with raw pika on a connection of its own, with publisher confirms.

    ``publish`` returns False when the broker refused the message: it closes the
    connection (541 for a table it cannot parse, e.g. a NaN double) or the channel; the
    producer then reconnects. Such a message never reached a queue.
    """

    def __init__(self, url: str) -> None:
        self._url = url
        self._conn: pika.BlockingConnection | None = None
        self._ch: Any = None
        self.refused = 0

    def _channel(self) -> Any:
        if self._conn is None or not self._conn.is_open:
            self._conn = pika.BlockingConnection(pika.URLParameters(self._url))
            self._ch = None
        if self._ch is None or not self._ch.is_open:
            self._ch = self._conn.channel()
            self._ch.confirm_delivery()
        return self._ch

    def publish(
        self, routing_key: str, body: bytes, props: pika.BasicProperties, exchange: str = ""
    ) -> bool:
        ch = self._channel()
        try:
            with raw_field_encoder():
                ch.basic_publish(exchange, routing_key, body, props)
        except (pex.ConnectionClosed, pex.ChannelClosed, pex.StreamLostError):
            self.refused += 1
            self._ch = None
            return False
        return True

    def get(self, queue: str) -> tuple[Any, Any, bytes] | None:
        """``basic.get`` one message (auto-ack), or None if the queue is empty."""
        method, props, body = self._channel().basic_get(queue, auto_ack=True)
        if method is None:
            return None
        return method, props, body

    def drain(self, queue: str) -> list[tuple[Any, bytes]]:
        """All messages on ``queue`` now (auto-acked), as (pika properties, body)."""
        out = []
        while (got := self.get(queue)) is not None:
            out.append((got[1], got[2]))
        return out

    def channel(self) -> Any:
        """The producer's channel (declares, deletes)."""
        return self._channel()

    def close(self) -> None:
        if self._conn is not None and self._conn.is_open:
            self._conn.close()
