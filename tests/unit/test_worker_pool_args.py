"""WorkerPool and TaskQueue argument checks and load_handler: no broker, no I/O."""

from __future__ import annotations

import os.path

import pytest

from hutch import Queue, RetryPolicy, TaskQueue, WorkerPool
from hutch._worker_pool import load_handler
from hutch._worker_pool.pool import window
from hutch._worker_pool.process import jsonable as _jsonable

URL = "amqp://guest:guest@localhost:1/"  # never connected: constructors do no I/O


def handler(body: object) -> None:
    pass


def test_load_handler() -> None:
    assert load_handler("os.path:join") is os.path.join
    assert load_handler("hutch._retry:RetryPolicy.delay_for") is RetryPolicy.delay_for


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("os.path.join", "must look like"),
        (":join", "must look like"),
        ("os.path:", "must look like"),
        ("os.path:join.", "must look like"),
        ("no_such_module_xyz:run", "cannot import module 'no_such_module_xyz'"),
        ("os.path:no_such_function", "has no attribute 'no_such_function'"),
        ("os:sep", "not a callable"),
    ],
)
def test_load_handler_rejects_bad_specs(spec: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        load_handler(spec)


def test_load_handler_needs_a_string() -> None:
    with pytest.raises(TypeError):
        load_handler(handler)  # type: ignore[arg-type]


def test_defaults_and_layout() -> None:
    pool = WorkerPool(URL, queue="tasks", handler=handler)
    assert pool.queue.name == "tasks" and pool.queue.durable  # durable by default
    assert pool.dead_letter_queue.name == "tasks.dead" and pool.dead_letter_queue.durable
    assert (pool.concurrency, pool.prefetch, pool.channels) == (4, 1, 1)  # one consumer
    assert pool.retry == RetryPolicy()
    assert not pool.is_running and pool.stats.processed == 0
    seed = WorkerPool(URL, queue="task_queue", handler=handler, concurrency=4, channels=2)
    assert seed.channels == 2
    pool.stop()  # never started: a no-op, and idempotent
    pool.stop()


def test_window_is_prefetch_per_worker_plus_a_few_spare() -> None:
    assert [window(n, 1) for n in (1, 2, 4, 8)] == [2, 4, 6, 10]
    assert window(4, 10) == 42
    assert window(10_000, 65535) == 65535  # basic.qos takes a 16-bit count


def test_handler_given_by_name() -> None:
    pool = WorkerPool(URL, queue="tasks", handler="tests.unit.test_worker_pool_args:handler")
    assert pool.handler is handler


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"concurrency": 0}, ValueError, "concurrency"),
        ({"concurrency": 2.0}, TypeError, "concurrency"),
        ({"prefetch": 0}, ValueError, "prefetch"),
        ({"channels": 5}, ValueError, "channels"),
        ({"channels": 0}, ValueError, "channels"),
        ({"timeout": 0}, ValueError, "timeout"),
        ({"retry": 3}, TypeError, "RetryPolicy"),
        ({"dead_letter_queue": "tasks"}, ValueError, "dead_letter_queue"),
        ({"dead_letter_queue": 5}, TypeError, "dead_letter_queue"),
        ({"processes": "yes"}, TypeError, "processes"),
        ({"queue": ""}, ValueError, "queue"),
        ({"queue": Queue("")}, ValueError, "name"),
        ({"queue": 7}, TypeError, "queue"),
        ({"handler": 42}, TypeError, "handler"),
        ({"handler": "nope"}, ValueError, "must look like"),
    ],
)
def test_bad_arguments_fail_at_once(
    kwargs: dict[str, object], error: type[Exception], match: str
) -> None:
    args: dict[str, object] = {"queue": "tasks", "handler": handler, **kwargs}
    with pytest.raises(error, match=match):
        WorkerPool(URL, **args)  # type: ignore[call-overload]


def test_process_workers_need_handlers_importable_by_name() -> None:
    WorkerPool(URL, queue="tasks", handler=handler, processes=True)  # module level: fine
    with pytest.raises(ValueError, match="module-level function"):
        WorkerPool(URL, queue="tasks", handler=lambda body: None, processes=True)

    def local(body: object) -> None:
        pass

    with pytest.raises(ValueError, match="module-level function"):
        WorkerPool(URL, queue="tasks", handler=local, processes=True)


def test_task_queue_declares_the_same_durable_queue() -> None:
    tasks = TaskQueue(URL, queue="tasks")
    assert tasks.queue.name == "tasks" and tasks.queue.durable
    with pytest.raises(ValueError, match="name"):
        TaskQueue(URL, queue=Queue(""))
    tasks.close()


def test_header_values_become_json_for_worker_processes() -> None:
    import datetime as dt
    import decimal
    import json

    value = {
        "n": 1,
        "b": b"bytes",
        "when": dt.datetime(2026, 1, 2, tzinfo=dt.timezone.utc),
        "d": decimal.Decimal("1.5"),
        "nested": [{"x": float("nan")}],
    }
    out = _jsonable(value)
    assert json.loads(json.dumps(out)) == {
        "n": 1,
        "b": "bytes",
        "when": "2026-01-02T00:00:00+00:00",
        "d": 1.5,
        "nested": [{"x": "nan"}],
    }
