"""Broadcast: every subscriber receives every message.

The publish/subscribe pattern of the seed program: a fanout exchange, ``ff.version.b``,
copies each message to every queue bound to it. Each subscriber binds its own anonymous
queue (server-named, exclusive, deleted when it disconnects), so three subscribers each
receive all the version announcements the publisher sends, and a subscriber that is not
running simply misses them.

Run it against any broker (it exits by itself after a few seconds)::

    python examples/broadcast.py [AMQP_URL]

The URL defaults to ``$HUTCH_URL``, then ``amqp://guest:guest@localhost:5672/``.
``HUTCH_EXAMPLE_PREFIX`` is put in front of the exchange name; the test suite uses it to
keep parallel runs apart.
"""

from __future__ import annotations

import os
import sys
import threading

from pydantic import BaseModel

import hutch


class Version(BaseModel):
    """A new version of a service was deployed."""

    service: str
    version: str


RELEASES = [
    Version(service="api", version="2.4.0"),
    Version(service="web", version="1.9.2"),
    Version(service="billing", version="0.7.1"),
    Version(service="api", version="2.4.1"),
]

SUBSCRIBERS = ["dashboard", "deployer", "auditor"]


def main(url: str | None) -> None:
    prefix = os.environ.get("HUTCH_EXAMPLE_PREFIX", "")
    # not durable, as the seed declared it: both programs can share the exchange
    versions = hutch.Exchange(prefix + "ff.version.b", type="fanout", durable=False)
    received: dict[str, list[str]] = {name: [] for name in SUBSCRIBERS}

    with hutch.connect(url) as conn:
        # Each subscriber opens (declares and binds) its own anonymous queue before the
        # publisher starts: a fanout exchange only copies to queues bound at that moment.
        subscribers = {
            name: hutch.Subscriber(conn, exchange=versions, model=Version).open()
            for name in SUBSCRIBERS
        }
        for name, sub in subscribers.items():
            print(f"{name} listens on its own queue {sub.queue_name[:12]}...")

        def listen(name: str, sub: hutch.Subscriber[Version]) -> None:
            def handle(release: Version) -> None:  # runs on this thread; acked on return
                received[name].append(f"{release.service} {release.version}")

            sub.run(handle, limit=len(RELEASES), timeout=5)

        threads = [
            threading.Thread(target=listen, args=(name, sub)) for name, sub in subscribers.items()
        ]
        for t in threads:
            t.start()

        with hutch.Publisher(conn, exchange=versions, model=Version) as publisher:
            for release in RELEASES:
                publisher.publish(release)  # returns once the broker confirmed it
                print(f"published {release.service} {release.version}")

        for t in threads:
            t.join()
        for sub in subscribers.values():
            sub.close()  # deletes the anonymous queue

    for name in SUBSCRIBERS:
        print(f"{name} received {len(received[name])}: {', '.join(received[name])}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)  # None: $HUTCH_URL
