"""Virtual time on the memory broker (``memory://NAME?clock=virtual``).

Time may jump only when every thread that uses the broker waits inside hutch for
something that only time can bring: the tests check both halves, that waits end as soon as
that is so (a minute's timeout in milliseconds), and that a busy thread (one that sleeps
for real, works in a handler, or is about to publish) keeps time at its real pace.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hutch
from hutch import Publisher, Queue, RpcClient, RpcServer, RpcTimeout, Subscriber, WorkerPool
from hutch._clock import REAL_CLOCK, Mailbox, Timer, VirtualClock, join_thread
from hutch._dead_letter import REQUEUE_DELAY
from hutch._memory import forget_broker

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def conn(unique_name: str) -> Iterator[hutch.Connection]:
    with hutch.connect(f"memory://{unique_name}?clock=virtual") as c:
        yield c
    forget_broker(unique_name)


def test_a_minute_of_waiting_for_nothing_takes_milliseconds(
    conn: hutch.Connection, unique_name: str
) -> None:
    clock = conn.clock
    assert isinstance(clock, VirtualClock)
    with Subscriber(conn, queue=Queue(unique_name, durable=False), model=str) as sub:
        began, real = clock.now(), time.monotonic()
        assert list(sub.messages(timeout=60)) == []
        assert clock.now() - began >= 60
        assert time.monotonic() - real < 10  # about 0.01 s; generous for a loaded machine


def test_a_message_ttl_and_its_dead_letter_on_virtual_time(
    conn: hutch.Connection, unique_name: str
) -> None:
    dead = Queue(f"{unique_name}.dead", durable=False)
    waiting = Queue(
        f"{unique_name}.wait",
        durable=False,
        message_ttl=3_600,
        dead_letter_exchange="",
        dead_letter_routing_key=dead.name,
    )
    clock = conn.clock
    with Subscriber(conn, queue=dead, model=str) as sub:
        with Publisher(conn, declare=[waiting], model=str) as pub:
            began = clock.now()
            pub.publish("an hour later", routing_key=waiting.name)
        (got,) = sub.messages(timeout=7_200, limit=1)
        # the broker's time jumped to the expiry, not past it: the wait ended there
        assert got.body == "an hour later"
        assert 3_600 <= clock.now() - began < 3_600 + 5


def test_an_rpc_timeout_is_virtual_and_the_call_fails_as_on_real_time(
    conn: hutch.Connection, unique_name: str
) -> None:
    ch = conn.channel()
    ch.declare([Queue(unique_name, durable=False)])  # a queue without a server
    with RpcClient(conn, queue=unique_name) as client:
        began = conn.clock.now()
        with pytest.raises(RpcTimeout):
            client.call("anything", timeout=300)
        assert conn.clock.now() - began >= 300


def test_a_thread_that_sleeps_for_real_before_it_publishes_keeps_time_real(
    conn: hutch.Connection, unique_name: str
) -> None:
    # the publisher thread has used the broker (it opened its publisher), so while it
    # sleeps it is busy: time must not jump over the subscriber's 5 s timeout
    q = Queue(unique_name, durable=False)
    with Subscriber(conn, queue=q, model=int) as sub:
        ready = threading.Event()

        def later() -> None:
            with Publisher(conn, model=int) as pub:
                ready.set()
                for i in range(3):
                    time.sleep(0.1)
                    pub.publish(i, routing_key=unique_name)

        t = threading.Thread(target=later)
        t.start()
        ready.wait(10)
        got = [m.body for m in sub.messages(timeout=5, limit=3)]
        t.join()
    assert got == [0, 1, 2]


def test_a_thread_started_after_the_broker_keeps_time_real_until_it_ends(
    conn: hutch.Connection, unique_name: str
) -> None:
    # a thread of the program that has not used the broker yet may be about to publish:
    # while it lives, a 0.3 s wait takes 0.3 s of real time; once it ended, none
    release = threading.Event()
    bystander = threading.Thread(target=release.wait, name="bystander")
    bystander.start()
    try:
        with Subscriber(conn, queue=Queue(unique_name, durable=False), model=str) as sub:
            real = time.monotonic()
            assert list(sub.messages(timeout=0.3)) == []
            assert time.monotonic() - real >= 0.3
            assert "bystander" in conn.clock.busy_threads()  # type: ignore[attr-defined]
            release.set()
            bystander.join()
            real = time.monotonic()
            assert list(sub.messages(timeout=300)) == []
            assert time.monotonic() - real < 10
    finally:
        release.set()


def test_a_hutch_thread_that_has_not_used_the_broker_yet_keeps_time_real(
    conn: hutch.Connection, unique_name: str
) -> None:
    # the CLI's runner thread before it publishes (CI: time jumped while it started up
    # and x-expires deleted the queue it was about to publish to): only the threads that
    # never act on a memory broker are left out, whatever their name
    q = Queue(unique_name, durable=False)

    def later() -> None:
        time.sleep(0.3)
        with Publisher(conn, model=int) as pub:
            pub.publish(1, routing_key=unique_name)

    with Subscriber(conn, queue=q, model=int) as sub:
        runner = threading.Thread(target=later, name="hutch-cli-run")
        runner.start()
        got = [m.body for m in sub.messages(timeout=5, limit=1)]
        runner.join()
    assert got == [1]


def test_a_thread_older_than_the_broker_does_not_hold_time_back(unique_name: str) -> None:
    # a session's helper thread, started before the broker, that never uses it
    release = threading.Event()
    helper = threading.Thread(target=release.wait, name="older-helper")
    helper.start()
    try:
        with hutch.connect(f"memory://{unique_name}?clock=virtual") as c:
            if "older-helper" in c.clock.busy_threads():  # type: ignore[attr-defined]
                # a virtual broker older than the helper is open (the session's, under
                # --hutch-broker=memory): the helper may use that one, so it counts
                pytest.skip("a virtual broker older than the helper thread is open")
            with Subscriber(c, queue=Queue(unique_name, durable=False), model=str) as sub:
                real = time.monotonic()
                assert list(sub.messages(timeout=300)) == []
                assert time.monotonic() - real < 10
        forget_broker(unique_name)
    finally:
        release.set()
        helper.join()


def test_a_thread_joining_another_lets_time_jump(conn: hutch.Connection) -> None:
    # the joiner only waits for what the other thread does: it does not hold time back
    clock = conn.clock
    sleeper = threading.Thread(target=clock.sleep, args=(600,))
    real = time.monotonic()
    sleeper.start()
    join_thread(sleeper, 30)
    assert not sleeper.is_alive()
    assert time.monotonic() - real < 10


@pytest.mark.parametrize("virtual", [True, False], ids=["virtual", "real"])
def test_a_timer_fires_at_its_deadline_on_its_clock_unless_cancelled(
    unique_name: str, virtual: bool
) -> None:
    # a pause of hutch's own (a held message's requeue) is a deadline on the clock: on
    # virtual time an hour passes in milliseconds, never early; cancel() stops it
    delay = 3_600.0 if virtual else 0.2
    with hutch.connect(f"memory://{unique_name}?clock={'virtual' if virtual else 'real'}") as c:
        clock = c.clock
        fired: list[float] = []
        began = clock.now()
        timer = Timer(clock, delay, lambda: fired.append(clock.now()), name="test-timer")
        cancelled = Timer(clock, delay / 2, lambda: fired.append(-1.0), name="test-cancelled")
        timer.start()
        cancelled.start()
        cancelled.cancel()
        real = time.monotonic()
        join_thread(timer, 30)
        join_thread(cancelled, 30)
        assert len(fired) == 1 and fired[0] - began >= delay
        if virtual:
            assert time.monotonic() - real < 10  # about 0.01 s
    forget_broker(unique_name)


def test_a_held_message_is_requeued_after_the_pause_on_virtual_time(
    conn: hutch.Connection, unique_name: str
) -> None:
    # a message hutch cannot dead-letter (the dead-letter queue exists with other
    # arguments) is held REQUEUE_DELAY seconds, then requeued: on virtual time the pause
    # passes while the subscriber waits, and the message comes back, again and again
    q = Queue(unique_name, durable=False)
    ch = conn.channel()
    ch.declare([q, Queue(f"{unique_name}.dead", durable=False, max_length=7)])
    with Publisher(conn, routing_key=q.name, declare=[q]) as raw:
        raw.publish(b"{broken", content_type="application/json")
    with Subscriber(conn, queue=q.name, model=int) as sub:
        began, real = conn.clock.now(), time.monotonic()
        for _ in range(3):
            # returns once no message came for 4 s: the held one comes back a second later
            sub.run(lambda body: None, timeout=REQUEUE_DELAY - 1)
        # held at 0, requeued at 5 and 10 s and held again, the last run ends at 14 s:
        # three tries, none hot, none lost
        assert sub.requeued == 3, sub.requeued
        assert conn.clock.now() - began >= 3 * (REQUEUE_DELAY - 1) + 2
        assert time.monotonic() - real < 10  # about 0.01 s: 14 s on a timer off the clock
    assert ch.message_count(q.name) == 1


def test_a_wait_made_ready_without_a_notification_is_woken(conn: hutch.Connection) -> None:
    # RpcServer.stop() on the main thread only sets a flag (it may run in a signal
    # handler); the virtual clock, which sees every wait's ready(), wakes such a wait
    clock = conn.clock
    flag: list[bool] = []
    event = threading.Event()  # never set here: only the clock's wake sets it

    def waiter() -> None:
        clock.enter()
        clock.wait(lambda: bool(flag), event.wait, None, wake=event.set)

    thread = threading.Thread(target=waiter, daemon=True)  # daemon: a failure ends
    thread.start()
    flag.append(True)
    join_thread(thread, 30)
    assert not thread.is_alive()


def test_closing_a_connection_does_not_let_time_jump(unique_name: str) -> None:
    # close() joins the connection's callback thread, which leaves threading.enumerate() a
    # moment before is_alive() turns False: time jumped in that moment, to this queue's
    # expiry (CI: a 404 in test_cli). Before the fix it was gone within 0 to 3 closes.
    url = f"memory://{unique_name}?clock=virtual"
    with hutch.connect(url) as conn:
        ch = conn.channel()
        ch.declare([Queue("kept", durable=False, expires=60)])
        for i in range(200):
            with hutch.connect(url) as other, Publisher(other, model=int) as pub:
                pub.publish(i, routing_key="kept")  # its confirm starts the callback thread
            assert ch.exists("queue", "kept"), f"gone after {i} closes"
        assert ch.message_count("kept") == 200
    forget_broker(unique_name)


def test_a_handler_that_works_keeps_time_real(conn: hutch.Connection, unique_name: str) -> None:
    server = RpcServer(conn, queue=unique_name)

    @server.procedure
    def slow(x: int) -> int:
        time.sleep(0.3)  # real work: the call's 1 s timeout must not pass meanwhile
        return x

    with server, RpcClient(conn, queue=unique_name) as client:
        for i in range(3):
            assert client.call("slow", i, timeout=1) == i


def test_a_worker_pool_run_timeout_is_virtual(conn: hutch.Connection, unique_name: str) -> None:
    done: list[int] = []
    pool = WorkerPool(conn, queue=Queue(unique_name, durable=False), handler=done.append, model=int)
    with hutch.TaskQueue(conn, queue=Queue(unique_name, durable=False), model=int) as tasks:
        for i in range(5):
            tasks.submit(i)
    began = conn.clock.now()
    pool.run(timeout=600, handle_signals=False)
    assert sorted(done) == list(range(5))
    assert conn.clock.now() - began >= 600


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    # at least 2 s: longer than the real time the publishing below takes
    timeouts=st.lists(st.floats(2.0, 10_000.0), min_size=1, max_size=4),
    sends=st.lists(st.tuples(st.integers(0, 3), st.floats(0.0, 0.02)), max_size=6),
)
def test_generated_waits_end_at_their_deadline_never_before_and_miss_nothing(
    unique_name: str, timeouts: list[float], sends: list[tuple[int, float]]
) -> None:
    """Threads wait with generated timeouts while another publishes to them now and then
    (sleeping for real in between): every message sent is received, and every wait that
    ends empty-handed has seen its whole timeout pass on the clock."""
    name = f"{unique_name}-{len(timeouts)}-{len(sends)}"
    with hutch.connect(f"memory://{name}?clock=virtual") as c:
        clock = c.clock
        queues = [Queue(f"{name}.{i}", durable=False) for i in range(len(timeouts))]
        subs = [Subscriber(c, queue=q, model=int).open() for q in queues]
        pub = Publisher(c, model=int).open()
        # the messages for waits that exist; each wait ends after its last one
        plan = [(i % len(timeouts), pause) for i, pause in sends]
        expected = {i: [n for n, (j, _) in enumerate(plan) if j == i] for i in range(len(subs))}
        results: dict[int, list[int]] = {}
        overdue: list[str] = []

        def wait(i: int) -> None:
            got: list[int] = []
            while True:
                began = clock.now()
                batch = [m.body for m in subs[i].messages(timeout=timeouts[i], limit=1)]
                if not batch:
                    if clock.now() - began < timeouts[i]:
                        overdue.append(f"wait {i} ended early")
                    break
                got.extend(batch)
            results[i] = got

        threads = [threading.Thread(target=wait, args=(i,)) for i in range(len(subs))]
        for t in threads:
            t.start()
        for n, (i, pause) in enumerate(plan):
            time.sleep(pause)
            pub.publish(n, routing_key=queues[i].name)
        for t in threads:
            # joined on the clock: a plain join() would be a busy thread, and time would
            # not jump for the waits
            join_thread(t, None)
        pub.close()
        for s in subs:
            s.close()
    forget_broker(name)
    assert overdue == []
    # a message published after its wait timed out is still in its queue, not lost: the
    # main thread was busy (sleeping or publishing) throughout, so no wait could end early
    assert results == expected


def test_a_url_names_the_clock_and_a_mismatch_says_what_to_do(unique_name: str) -> None:
    assert hutch.ConnectionSettings.from_url("memory://a?clock=virtual").memory_clock == "virtual"
    assert hutch.ConnectionSettings.from_url("memory://a").memory_clock is None
    with pytest.raises(ValueError, match="clock=real or clock=virtual"):
        hutch.ConnectionSettings.from_url("memory://a?clock=fast")
    with pytest.raises(ValueError, match="unknown URL option 'clock'"):
        hutch.ConnectionSettings.from_url("amqp://localhost/?clock=virtual")
    with hutch.connect(f"memory://{unique_name}?clock=virtual") as first:
        # without clock= a connection joins the broker as it is
        with hutch.connect(f"memory://{unique_name}") as second:
            assert second.clock is first.clock
        with pytest.raises(ValueError, match="already runs on virtual time"):
            hutch.connect(f"memory://{unique_name}?clock=real")
    forget_broker(unique_name)
    assert hutch.Connection("memory://x").clock is REAL_CLOCK  # not open: no broker yet


def test_a_mailbox_item_is_taken_once_and_a_late_one_still_counts() -> None:
    box: Mailbox[int] = Mailbox()
    box.put(1)
    # a deadline already past still takes what waits
    assert box.get(REAL_CLOCK, REAL_CLOCK.now() - 1) == 1
    assert box.get(REAL_CLOCK, REAL_CLOCK.now() + 0.01) is None
    got: list[int | None] = []
    takers = [
        threading.Thread(target=lambda: got.append(box.get(REAL_CLOCK, REAL_CLOCK.now() + 5)))
        for _ in range(3)
    ]
    for t in takers:
        t.start()
    for i in range(3):
        box.put(i)
    for t in takers:
        t.join(10)
    assert sorted(x for x in got if x is not None) == [0, 1, 2]


def test_a_wait_while_another_thread_works_does_not_wake_the_jumper(
    conn: hutch.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Time cannot jump while a thread is busy, so a thread that starts to wait then need
    # not wake the jumper (a thread switch and a scan of every thread): it looks only when
    # the last busy thread waits, and every 10 ms
    clock = conn.clock
    assert isinstance(clock, VirtualClock)
    looks: list[float] = []
    jump = clock.jump

    def counted() -> bool:
        looks.append(time.monotonic())
        return jump()

    monkeypatch.setattr(clock, "jump", counted)
    box: Mailbox[int] = Mailbox()

    def produce() -> None:
        clock.enter()  # known to the clock, and busy throughout: it never waits in hutch
        for i in range(200):
            time.sleep(0.0005)
            box.put(i)

    producer = threading.Thread(target=produce)
    producer.start()
    began = time.monotonic()
    got = [box.get(clock, clock.deadline(10)) for _ in range(200)]
    took = time.monotonic() - began
    producer.join(10)
    assert got == list(range(200))
    # 200 waits; the periodic looks alone are one per 10 ms
    assert len(looks) <= took / 0.01 + 20, (len(looks), took)
