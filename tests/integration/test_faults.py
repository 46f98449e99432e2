"""Real faults against a real broker, counting every message.

Every test here breaks something for real: it restarts the broker node, closes connections
from the broker side (320 CONNECTION_FORCED), stalls or resets the TCP link through an
in-test forwarder, or raises a memory alarm. Each keeps a :class:`~tests.reliability.Ledger`
of sent, confirmed, received, dead-lettered and duplicated messages and asserts that none
was lost; with ``HUTCH_RELIABILITY_RESULTS`` set the numbers are written for
``docs/reliability.md``.

The tests run on their own broker node (module-scoped) so that restarting it or raising an
alarm cannot disturb the session broker other test modules share.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future

import pytest

from hutch import (
    AuthenticationError,
    Connection,
    ConnectionBlocked,
    ConnectionLost,
    ConsumerCancelled,
    HutchError,
    Message,
    Publisher,
    Queue,
    RecoveryPolicy,
    Subscriber,
)
from hutch.testing import LocalBroker
from tests.proxy import TcpProxy
from tests.reliability import Ledger, wait_until

pytestmark = [
    pytest.mark.timeout(180),
    pytest.mark.rabbitmq_only("fault injection: stops, restarts and alarms a real broker node"),
]

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------- helpers
class PublishLoop:
    """Publishes ``count`` ints with confirms from a thread, recording into a ledger.

    :meth:`stop` ends it early, after the message in hand.
    """

    def __init__(
        self,
        pub: Publisher[int],
        ledger: Ledger,
        count: int,
        *,
        batch: int = 1,
        prefix: str = "m",
        pause: float = 0.0,
    ) -> None:
        self.pub = pub
        self.ledger = ledger
        self.count = count
        self.batch = batch
        self.prefix = prefix
        self.pause = pause
        self.done = 0
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="test-publisher", daemon=True)

    def start(self) -> PublishLoop:
        self.thread.start()
        return self

    def _run(self) -> None:
        i = 0
        while i < self.count and not self._stop.is_set():
            n = min(self.batch, self.count - i)
            if self.batch == 1:
                mid = f"{self.prefix}-{i}"
                self.ledger.on_sent([mid])
                try:
                    self.pub.publish(i, message_id=mid)
                except HutchError as exc:
                    self.ledger.on_publish_error(exc)
                else:
                    self.ledger.on_confirmed([mid])
            else:
                try:
                    result = self.pub.publish_many(range(i, i + n))
                except HutchError as exc:
                    self.ledger.on_publish_error(exc)
                else:
                    self.ledger.on_sent(result.message_ids)
                    failed = {idx for idx, _ in result.failed}
                    for _, error in result.failed:
                        self.ledger.on_publish_error(error)
                    self.ledger.on_confirmed(
                        mid for k, mid in enumerate(result.message_ids) if k not in failed
                    )
            i += n
            self.done = i
            if self.pause:
                time.sleep(self.pause)

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout: float) -> None:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"publisher stuck after {self.done} messages"


class ConsumeLoop:
    """Runs a subscriber in a thread, recording every message id into a ledger."""

    def __init__(self, sub: Subscriber[int], ledger: Ledger, *, work: float = 0.0) -> None:
        self.sub = sub
        self.ledger = ledger
        self.work = work
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="test-consumer", daemon=True)

    def start(self) -> ConsumeLoop:
        self.thread.start()
        return self

    def _handle(self, _body: int, message: Message[int]) -> None:
        if self.work:
            time.sleep(self.work)
        self.ledger.on_received(message.message_id)

    def _run(self) -> None:
        try:
            self.sub.run(self._handle)
        except BaseException as exc:
            self.error = exc

    def stop(self) -> None:
        self.sub.stop()
        self.thread.join(15)
        assert not self.thread.is_alive(), "consumer did not stop"
        assert self.error is None, repr(self.error)


def drain_until_all_received(ledger: Ledger, timeout: float) -> None:
    """Wait until every sent message was received (or the timeout)."""
    wait_until(lambda: not ledger.lost, timeout, interval=0.1)


def durable_queue(name: str) -> Queue:
    return Queue(name, durable=True, arguments={"x-expires": 300_000})


# ------------------------------------------------------------------------ broker restart
@pytest.mark.timeout(240)
def test_broker_restart_while_10k_messages_are_published_and_consumed(
    fault_broker: LocalBroker, unique_name: str
) -> None:
    ledger = Ledger("broker restarted mid-stream (10,000 persistent msgs, Subscriber)")
    q = durable_queue(unique_name)
    with (
        Connection(fault_broker.url, connection_name=f"{unique_name}-pub") as pc,
        Connection(fault_broker.url, connection_name=f"{unique_name}-sub") as sc,
    ):
        ledger.clock.watch(pc, sc)
        with (
            Publisher(pc, routing_key=q.name, model=int, declare=[q]) as pub,
            Subscriber(sc, queue=q, model=int, prefetch=200) as sub,
        ):
            consumer = ConsumeLoop(sub, ledger).start()
            # paced (~10 s without faults) so that the restart lands mid-stream
            publisher = PublishLoop(pub, ledger, 10_000, batch=100, pause=0.1).start()
            assert wait_until(lambda: len(ledger.confirmed) >= 3000, 60)
            fault_broker.restart()
            assert len(ledger.confirmed) < 10_000  # the fault struck mid-stream
            publisher.join(120)
            drain_until_all_received(ledger, 60)
            consumer.stop()
        assert pc.recoveries >= 1 and sc.recoveries >= 1
    ledger.record()
    ledger.assert_nothing_lost()
    assert len(ledger.sent) == 10_000
    assert ledger.clock.longest is not None and ledger.clock.longest < 60


# ---------------------------------------------------------------- broker-side close (320)
def test_close_connection_of_publisher_while_publishing(
    fault_broker: LocalBroker, unique_name: str
) -> None:
    ledger = Ledger("close_connection (320) against a Publisher")
    q = durable_queue(unique_name)
    with (
        Connection(fault_broker.url, connection_name=f"{unique_name}-pub") as pc,
        Connection(fault_broker.url, connection_name=f"{unique_name}-sub") as sc,
    ):
        ledger.clock.watch(pc)
        with (
            Publisher(pc, routing_key=q.name, model=int, declare=[q]) as pub,
            Subscriber(sc, queue=q, model=int) as sub,
        ):
            consumer = ConsumeLoop(sub, ledger).start()
            # publishes until stopped (bounded): the close lands mid-stream however fast
            publisher = PublishLoop(pub, ledger, 1_000_000).start()
            assert wait_until(lambda: len(ledger.confirmed) >= 500, 30)
            assert fault_broker.close_connections(f"{unique_name}-pub", "test: force close") == 1
            assert wait_until(lambda: pc.recoveries == 1, 30), pc.recoveries
            # the publisher goes on through the recovery: messages published after the
            # close are confirmed on the recovered connection
            recovered_at = len(ledger.confirmed)
            assert wait_until(lambda: len(ledger.confirmed) >= recovered_at + 500, 60), (
                recovered_at,
                len(ledger.confirmed),
            )
            publisher.stop()
            publisher.join(60)
            assert publisher.done < publisher.count  # stopped by the test, not run dry
            drain_until_all_received(ledger, 30)
            consumer.stop()
        assert pc.recoveries == 1
        assert sc.recoveries == 0
    ledger.record()
    ledger.assert_nothing_lost()
    assert ledger.clock.longest is not None and ledger.clock.longest < 30


def test_close_connection_of_subscriber_while_consuming(
    fault_broker: LocalBroker, unique_name: str
) -> None:
    ledger = Ledger("close_connection (320) against a Subscriber")
    q = durable_queue(unique_name)
    with (
        Connection(fault_broker.url, connection_name=f"{unique_name}-pub") as pc,
        Connection(fault_broker.url, connection_name=f"{unique_name}-sub") as sc,
    ):
        ledger.clock.watch(sc)
        with (
            Publisher(pc, routing_key=q.name, model=int, declare=[q]) as pub,
            Subscriber(sc, queue=q, model=int, prefetch=50) as sub,
        ):
            # a slow consumer, so there is a backlog and unacked messages when the link dies
            consumer = ConsumeLoop(sub, ledger, work=0.001).start()
            publisher = PublishLoop(pub, ledger, 3000, batch=50).start()
            assert wait_until(lambda: ledger.received_unique >= 500, 30)
            assert fault_broker.close_connections(f"{unique_name}-sub", "test: force close") == 1
            assert ledger.received_unique < 3000  # the fault struck mid-stream
            publisher.join(60)
            drain_until_all_received(ledger, 30)
            consumer.stop()
        assert sc.recoveries == 1
        assert pc.recoveries == 0
    ledger.record()
    ledger.assert_nothing_lost()
    assert ledger.clock.longest is not None and ledger.clock.longest < 30


# ------------------------------------------------------------------- network faults (proxy)
def test_stalled_link_is_detected_by_heartbeat_and_recovered(
    fault_broker: LocalBroker, unique_name: str
) -> None:
    ledger = Ledger("TCP link stalled (heartbeat=1 s), Publisher behind a proxy")
    q = durable_queue(unique_name)
    with (
        TcpProxy("127.0.0.1", fault_broker.amqp_port) as proxy,
        Connection(
            proxy.url(fault_broker.url),
            connection_name=f"{unique_name}-pub",
            heartbeat=1,
            connect_timeout=2,
        ) as pc,
        Connection(fault_broker.url, connection_name=f"{unique_name}-sub") as sc,
    ):
        ledger.clock.watch(pc)
        with (
            Publisher(pc, routing_key=q.name, model=int, declare=[q]) as pub,
            Subscriber(sc, queue=q, model=int) as sub,
        ):
            consumer = ConsumeLoop(sub, ledger).start()
            publisher = PublishLoop(pub, ledger, 1500, pause=0.002).start()
            assert wait_until(lambda: len(ledger.confirmed) >= 300, 30)
            stalled_at = time.monotonic()
            proxy.stall()
            # nothing but the missing heartbeats tells the client that the link is dead
            assert wait_until(lambda: ledger.clock.count("lost") == 1, 30)
            detected = time.monotonic() - stalled_at
            proxy.resume()
            publisher.join(60)
            drain_until_all_received(ledger, 30)
            consumer.stop()
        assert pc.recoveries == 1
    ledger.notes = f"heartbeat timeout detected after {detected:.1f} s"
    ledger.record()
    ledger.assert_nothing_lost()
    assert ledger.clock.longest is not None and ledger.clock.longest < 30


def test_tcp_reset_is_recovered(fault_broker: LocalBroker, unique_name: str) -> None:
    ledger = Ledger("TCP connection reset (RST) under a Publisher and a Subscriber")
    q = durable_queue(unique_name)
    with TcpProxy("127.0.0.1", fault_broker.amqp_port) as proxy:
        url = proxy.url(fault_broker.url)
        with (
            Connection(url, connection_name=f"{unique_name}-pub") as pc,
            Connection(url, connection_name=f"{unique_name}-sub") as sc,
        ):
            ledger.clock.watch(pc, sc)
            with (
                Publisher(pc, routing_key=q.name, model=int, declare=[q]) as pub,
                Subscriber(sc, queue=q, model=int, prefetch=50) as sub,
            ):
                consumer = ConsumeLoop(sub, ledger, work=0.0005).start()
                publisher = PublishLoop(pub, ledger, 3000, batch=20).start()
                assert wait_until(lambda: ledger.received_unique >= 500, 30)
                assert proxy.reset() == 2
                publisher.join(60)
                drain_until_all_received(ledger, 30)
                consumer.stop()
            assert pc.recoveries == 1 and sc.recoveries == 1
    ledger.record()
    ledger.assert_nothing_lost()
    assert ledger.clock.longest is not None and ledger.clock.longest < 30


def test_publish_raises_only_when_the_recovery_policy_is_exhausted(
    fault_broker: LocalBroker, unique_name: str
) -> None:
    policy = RecoveryPolicy(max_attempts=3, initial_delay=0.1, max_delay=0.2)
    events: list[str] = []
    q = durable_queue(unique_name)
    proxy = TcpProxy("127.0.0.1", fault_broker.amqp_port)
    with Connection(proxy.url(fault_broker.url), recovery=policy, connect_timeout=2) as conn:
        conn.add_listener(lambda event, _error: events.append(event))
        with Publisher(conn, routing_key=q.name, model=int, declare=[q]) as pub:
            pub.publish(1)
            proxy.stall()  # in flight, not confirmed: the next publish waits ...
            outcome: Future[str] = Future()

            def publish_one() -> None:
                try:
                    outcome.set_result(pub.publish(2, timeout=60))
                except BaseException as exc:
                    outcome.set_exception(exc)

            threading.Thread(target=publish_one, daemon=True).start()
            time.sleep(0.5)
            assert not outcome.done()
            proxy.close()  # ... until the link dies and every reconnection is refused
            with pytest.raises(ConnectionLost, match="not recovered after 3 attempts"):
                outcome.result(30)
            assert events == ["lost", "failed"]
            with pytest.raises(ConnectionLost):
                pub.publish(3)
    with Connection(fault_broker.url) as check:
        assert check.channel().message_count(q.name) == 1
        check.channel().delete_queue(q.name)


# ---------------------------------------------------------------------------- dead channel
def test_ack_of_a_delivery_from_a_dead_channel_is_dropped(
    fault_broker: LocalBroker, unique_name: str
) -> None:
    q = durable_queue(unique_name)
    holding = threading.Event()
    release = threading.Event()
    seen: list[tuple[int, bool]] = []
    closed_channels: list[str] = []

    class Watch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "broker closed channel" in record.getMessage():
                closed_channels.append(record.getMessage())

    watch = Watch(logging.DEBUG)
    logging.getLogger("hutch").addHandler(watch)
    try:
        with Connection(fault_broker.url, connection_name=f"{unique_name}-sub") as sc:
            with Publisher(sc, routing_key=q.name, model=int, declare=[q]) as pub:
                pub.publish(1)
            with Subscriber(sc, queue=q, model=int, prefetch=1) as sub:

                def handler(n: int, message: Message[int]) -> None:
                    seen.append((n, message.redelivered))
                    if len(seen) == 1:
                        holding.set()
                        release.wait(30)  # the connection is replaced meanwhile

                t = threading.Thread(target=lambda: sub.run(handler, limit=2, timeout=30))
                t.start()
                assert holding.wait(10)
                fault_broker.close_connections(f"{unique_name}-sub")
                assert wait_until(lambda: sc.recoveries == 1, 30)
                release.set()  # the handler returns: its ack belongs to the dead channel
                t.join(30)
                assert not t.is_alive()
            assert sc.recoveries == 1
            assert sc.channel().message_count(q.name) == 0
            sc.channel().delete_queue(q.name)
    finally:
        logging.getLogger("hutch").removeHandler(watch)
    # handled once before the fault, redelivered once after; the stale ack was never sent
    # on the new channel (that would have closed it with 406 unknown delivery tag)
    assert seen == [(1, False), (1, True)]
    assert closed_channels == []


# ------------------------------------------------------------------------ cancelled consumer
def test_consumer_cancelled_by_queue_deletion_raises_by_default(
    fault_broker: LocalBroker, unique_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    with Connection(fault_broker.url) as conn:
        ch = conn.channel()
        ch.declare([Queue(unique_name, durable=False)])
        with Subscriber(conn, queue=unique_name, model=int) as sub:
            threading.Timer(0.5, lambda: ch.delete_queue(unique_name)).start()
            with caplog.at_level(logging.WARNING, "hutch"), pytest.raises(ConsumerCancelled):
                sub.run(lambda _n: None, timeout=20)
    assert any("cancelled the consumer" in r.getMessage() for r in caplog.records)


def test_on_cancel_must_be_raise_or_resubscribe() -> None:
    with pytest.raises(ValueError, match="on_cancel"):
        Subscriber("amqp://localhost/", queue="q", on_cancel="ignore")  # type: ignore[call-overload]


def test_consumer_cancelled_by_queue_deletion_resubscribes_when_it_is_back(
    fault_broker: LocalBroker, unique_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    q = Queue(unique_name, durable=False)
    got: list[int] = []
    with Connection(fault_broker.url) as conn:
        admin = conn.channel()
        admin.declare([q])
        with (
            Subscriber(conn, queue=unique_name, model=int, on_cancel="resubscribe") as sub,
            Publisher(conn, routing_key=unique_name, model=int) as pub,
        ):
            pub.publish(1)
            t = threading.Thread(target=lambda: sub.run(got.append, limit=2, timeout=30))
            with caplog.at_level(logging.INFO, "hutch"):
                t.start()
                assert wait_until(lambda: got == [1], 10)
                admin.delete_queue(unique_name)
                time.sleep(2.5)  # the subscriber waits for the queue to come back ...
                assert t.is_alive()
                admin.declare([q])  # ... here it is
                assert wait_until(
                    lambda: any("re-subscribed" in r.getMessage() for r in caplog.records), 10
                )
                pub.publish(2)
                t.join(20)
            assert not t.is_alive()
        admin.delete_queue(unique_name)
    assert got == [1, 2]
    messages = [r.getMessage() for r in caplog.records]
    assert any("cancelled the consumer" in m for m in messages)


# --------------------------------------------------------------------------- memory alarm
def test_memory_alarm_blocks_publishing_with_a_clear_error_then_resumes(
    fault_broker: LocalBroker, unique_name: str
) -> None:
    ledger = Ledger("memory alarm raised then cleared (publish_blocked_timeout=2 s)")
    q = durable_queue(unique_name)
    with (
        Connection(
            fault_broker.url, connection_name=f"{unique_name}-pub", publish_blocked_timeout=2
        ) as pc,
        Connection(fault_broker.url, connection_name=f"{unique_name}-sub") as sc,
        Publisher(pc, routing_key=q.name, model=int, declare=[q]) as pub,
        Subscriber(sc, queue=q, model=int) as sub,
    ):
        consumer = ConsumeLoop(sub, ledger).start()
        PublishLoop(pub, ledger, 100, prefix="before").start().join(30)
        blocked_errors: list[ConnectionBlocked] = []
        try:
            fault_broker.rabbitmqctl("set_vm_memory_high_watermark", "0.0000001")
            began = time.monotonic()
            for i in range(2):
                try:
                    pub.publish(i, message_id=f"during-{i}")
                except ConnectionBlocked as exc:
                    blocked_errors.append(exc)
                    ledger.on_refused(f"during-{i}")
            waited = time.monotonic() - began
            assert pc.blocked
        finally:
            fault_broker.rabbitmqctl("set_vm_memory_high_watermark", "0.4")
        assert len(blocked_errors) == 2
        assert "blocked publishing" in str(blocked_errors[0])
        assert isinstance(blocked_errors[0], TimeoutError)
        assert waited < 20  # bounded by publish_blocked_timeout, not by the publish timeout
        assert wait_until(lambda: not pc.blocked, 30)
        PublishLoop(pub, ledger, 100, prefix="after").start().join(30)
        drain_until_all_received(ledger, 30)
        # the message that was on the wire when the alarm struck arrives after it clears
        # (at-least-once: its publish raised, yet it may be delivered)
        wait_until(lambda: "during-0" in ledger.received, 5)
        consumer.stop()
        assert pc.recoveries == 0
    ledger.notes = f"2 publishes refused with ConnectionBlocked after {waited:.1f} s"
    ledger.record()
    ledger.assert_nothing_lost()


# ------------------------------------------------------------------- not retried: 403
def test_authentication_failure_on_reconnect_is_not_retried(
    fault_broker: LocalBroker, unique_name: str
) -> None:
    user = f"u-{unique_name[-8:]}"
    fault_broker.rabbitmqctl("add_user", user, "first-password")
    fault_broker.rabbitmqctl("set_permissions", "-p", "/", user, ".*", ".*", ".*")
    url = fault_broker.url.replace("guest:guest@", f"{user}:first-password@")
    events: list[tuple[str, BaseException | None]] = []
    try:
        with Connection(url, connection_name=unique_name) as conn:
            conn.add_listener(lambda event, error: events.append((event, error)))
            fault_broker.rabbitmqctl("change_password", user, "second-password")
            fault_broker.close_connections(unique_name)
            assert wait_until(lambda: len(events) >= 2, 30)
            assert [e for e, _ in events] == ["lost", "failed"]
            assert isinstance(events[1][1], AuthenticationError)
            time.sleep(1)
            assert len(events) == 2  # no further attempts
            assert not conn.is_open
            with pytest.raises(AuthenticationError):
                conn.channel()
    finally:
        fault_broker.rabbitmqctl("delete_user", user)


# ------------------------------------------------------------------ no password in any log
class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.texts: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.texts.append(self.format(record))  # message, arguments and any traceback


def test_password_never_appears_in_logs_or_reprs(
    fault_broker: LocalBroker, unique_name: str
) -> None:
    secret, secret2, wrong = "Pw-7f3a9c-first", "Pw-0b41d2-second", "Pw-e5c8aa-wrong"
    user = f"p-{unique_name[-8:]}"
    fault_broker.rabbitmqctl("add_user", user, secret)
    fault_broker.rabbitmqctl("set_permissions", "-p", "/", user, ".*", ".*", ".*")
    url = fault_broker.url.replace("guest:guest@", f"{user}:{secret}@")
    capture = _Capture()
    capture.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    loggers = [logging.getLogger("hutch"), logging.getLogger("pika")]
    levels = [lg.level for lg in loggers]
    texts: list[str] = []
    for lg in loggers:
        lg.addHandler(capture)
        lg.setLevel(logging.DEBUG)
    try:
        q = Queue(unique_name, durable=False)
        # connect, work, get disconnected and reconnect
        with Connection(url, connection_name=unique_name) as conn:
            texts += [repr(conn), repr(conn.settings), str(conn.settings)]
            with (
                Publisher(conn, routing_key=q.name, model=int, declare=[q]) as pub,
                Subscriber(conn, queue=q, model=int) as sub,
            ):
                texts += [repr(pub), repr(sub)]
                pub.publish(1)
                assert sub.get(timeout=10) is not None
                fault_broker.close_connections(unique_name)
                assert wait_until(lambda: conn.recoveries == 1, 30)
                pub.publish(2)
                assert sub.get(timeout=10) is not None
            # fail for good: the password changed while we were away
            fault_broker.rabbitmqctl("change_password", user, secret2)
            fault_broker.close_connections(unique_name)
            assert wait_until(lambda: conn.io.failure is not None, 30)
            texts += [repr(conn), str(conn.io.failure), repr(conn.io.failure)]
        # refused at the first attempt, and unreachable
        for bad in (url.replace(secret, wrong), url.replace(f":{fault_broker.amqp_port}/", ":1/")):
            with pytest.raises(HutchError) as info:
                Connection(bad, connect_timeout=2).open()
            texts += [str(info.value), repr(info.value)]
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.removeHandler(capture)
            lg.setLevel(level)
        fault_broker.rabbitmqctl("delete_user", user)
    texts += capture.texts
    assert len(capture.texts) > 20  # we did capture pika's and hutch's chatter
    assert any("restored" in t for t in capture.texts)
    for text in texts:
        for pw in (secret, secret2, wrong):
            assert pw not in text, text


# -------------------------------------------------------------------------- address list
def test_fails_over_to_the_next_address_when_the_first_goes_away(
    fault_broker: LocalBroker, unique_name: str
) -> None:
    ledger = Ledger("first of two addresses goes away (connection refused), Publisher")
    q = durable_queue(unique_name)
    proxy = TcpProxy("127.0.0.1", fault_broker.amqp_port)
    try:
        urls = [proxy.url(fault_broker.url), fault_broker.url]
        with (
            Connection(urls, connection_name=f"{unique_name}-pub") as pc,
            Connection(fault_broker.url, connection_name=f"{unique_name}-sub") as sc,
        ):
            ledger.clock.watch(pc)
            assert pc.io.connected_address is not None
            assert pc.io.connected_address.port == proxy.port
            with (
                Publisher(pc, routing_key=q.name, model=int, declare=[q]) as pub,
                Subscriber(sc, queue=q, model=int) as sub,
            ):
                consumer = ConsumeLoop(sub, ledger).start()
                publisher = PublishLoop(pub, ledger, 2000, batch=20).start()
                assert wait_until(lambda: len(ledger.confirmed) >= 400, 30)
                proxy.close()  # resets the link and refuses new connections
                publisher.join(60)
                drain_until_all_received(ledger, 30)
                consumer.stop()
            assert pc.recoveries == 1
            assert pc.io.connected_address is not None
            assert pc.io.connected_address.port == fault_broker.amqp_port
    finally:
        proxy.close()
    ledger.record()
    ledger.assert_nothing_lost()


# ------------------------------------------------------------------ the test broker's tools
def test_close_connections_closes_the_named_ones_with_one_command(
    fault_broker: LocalBroker, unique_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    commands: list[str] = []
    real = fault_broker.rabbitmqctl

    def counting(*args: str, timeout: float = 30.0) -> str:
        commands.append(args[0])
        return real(*args, timeout=timeout)

    monkeypatch.setattr(fault_broker, "rabbitmqctl", counting)
    names = [f"{unique_name}-a", f"{unique_name}-b é", f"other-{unique_name[::-1]}"]
    with (
        Connection(fault_broker.url, connection_name=names[0]) as a,
        Connection(fault_broker.url, connection_name=names[1]) as b,
        Connection(fault_broker.url, connection_name=names[2]) as other,
    ):
        assert fault_broker.close_connections(unique_name, reason="by the test") == 2
        assert commands == ["eval"]
        assert wait_until(lambda: a.recoveries == 1 and b.recoveries == 1, 30)
        assert other.recoveries == 0
        assert fault_broker.close_connections(f"{unique_name}-nobody") == 0
