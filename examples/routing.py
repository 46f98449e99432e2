"""Routing: direct, topic and headers exchanges, and what each subscriber receives.

* direct: a queue receives the messages whose routing key equals one of its binding keys;
* topic: binding keys are patterns of dot-separated words, ``*`` matching exactly one word
  and ``#`` zero or more (so ``order.#`` matches ``order`` itself);
* headers: the routing key is ignored; a binding matches on message headers, ``all`` of
  them (``x-match: all``) or ``any`` of them.

Run it against any broker (it exits by itself after a few seconds)::

    python examples/routing.py [AMQP_URL]

The URL defaults to ``$HUTCH_URL``, then ``amqp://guest:guest@localhost:5672/``.
``HUTCH_EXAMPLE_PREFIX`` is put in front of the exchange names; the test suite uses it to
keep parallel runs apart.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Literal

import hutch


def receive(subscribers: dict[str, hutch.Subscriber[str]]) -> None:
    """Print what each subscriber got: publishes were confirmed, so it is all queued.

    The subscribers share one quarter-second window: each reads until the window is over
    and then until its queue stays quiet for 50 ms.
    """
    until = time.monotonic() + 0.25
    for label, sub in subscribers.items():
        quiet = max(until - time.monotonic(), 0.05)
        bodies = [message.body for message in sub.messages(timeout=quiet)]
        print(f"  {label:<32} got {', '.join(bodies) or '(nothing)'}")
        sub.close()


def direct(conn: hutch.Connection, prefix: str) -> None:
    logs = hutch.Exchange(prefix + "routing.logs", "direct", durable=False, auto_delete=True)
    subscribers = {
        "key 'error'": hutch.Subscriber(conn, exchange=logs, routing_keys="error", model=str),
        "keys 'info', 'warning', 'error'": hutch.Subscriber(
            conn, exchange=logs, routing_keys=["info", "warning", "error"], model=str
        ),
    }
    for sub in subscribers.values():
        sub.open()  # queue declared and bound: from now on it receives
    print("direct exchange: published info, warning, error, debug")
    with hutch.Publisher(conn, exchange=logs, model=str) as publisher:
        for level in ["info", "warning", "error", "debug"]:
            publisher.publish(level, routing_key=level)
    receive(subscribers)


def topic(conn: hutch.Connection, prefix: str) -> None:
    events = hutch.Exchange(prefix + "routing.events", "topic", durable=False, auto_delete=True)
    patterns = ["order.*", "order.#", "*.*.eu", "#.eu", "#"]
    subscribers = {
        f"pattern {p!r}": hutch.Subscriber(conn, exchange=events, routing_keys=p, model=str)
        for p in patterns
    }
    for sub in subscribers.values():
        sub.open()
    keys = ["order", "order.created", "order.created.eu", "refund.created.eu", "eu"]
    print(f"topic exchange: published {', '.join(keys)}")
    with hutch.Publisher(conn, exchange=events, model=str) as publisher:
        for key in keys:
            publisher.publish(key, routing_key=key)
    receive(subscribers)


def headers(conn: hutch.Connection, prefix: str) -> None:
    reports = hutch.Exchange(prefix + "routing.reports", "headers", durable=False, auto_delete=True)
    wanted = {"format": "pdf", "type": "report"}
    modes: list[Literal["all", "any"]] = ["all", "any"]
    subscribers = {
        f"format=pdf {mode} type=report": hutch.Subscriber(
            conn, exchange=reports, headers=wanted, match=mode, model=str
        )
        for mode in modes
    }
    for sub in subscribers.values():
        sub.open()
    documents = [("pdf", "report"), ("pdf", "log"), ("csv", "report"), ("csv", "log")]
    print(f"headers exchange: published {', '.join(f'{f}-{t}' for f, t in documents)}")
    with hutch.Publisher(conn, exchange=reports, model=str) as publisher:
        for fmt, kind in documents:
            publisher.publish(f"{fmt}-{kind}", headers={"format": fmt, "type": kind})
    receive(subscribers)


def main(url: str | None) -> None:
    prefix = os.environ.get("HUTCH_EXAMPLE_PREFIX", "")
    with hutch.connect(url) as conn:
        direct(conn, prefix)
        topic(conn, prefix)
        headers(conn, prefix)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)  # None: $HUTCH_URL
