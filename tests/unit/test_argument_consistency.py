"""The same wrong argument gets the same error from every class that takes it.

Issue 11: ``prefetch="1"`` was a ValueError in one class and a TypeError in another. Every
constructor checks its arguments with ``hutch._checks``; these tests pass the same
generated wrong value to every class that takes the option and compare what comes back.
No I/O: constructors only check (nothing listens on the URL).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hutch import Publisher, RpcClient, RpcServer, Subscriber, TaskQueue, WorkerPool

URL = "amqp://guest:guest@127.0.0.1:1/"


def _handler(body: object) -> None:
    del body


Build = Callable[..., object]

# every public class, called with only what it needs besides the option under test
TAKES: dict[str, dict[str, Build]] = {
    "prefetch": {
        "Subscriber": lambda **kw: Subscriber(URL, queue="q", **kw),
        "RpcServer": lambda **kw: RpcServer(URL, **kw),
        "WorkerPool": lambda **kw: WorkerPool(URL, queue="q", handler=_handler, **kw),
    },
    "concurrency": {
        "RpcServer": lambda **kw: RpcServer(URL, **kw),
        "WorkerPool": lambda **kw: WorkerPool(URL, queue="q", handler=_handler, **kw),
    },
    "timeout": {
        "Publisher": lambda **kw: Publisher(URL, **kw),
        "Subscriber": lambda **kw: Subscriber(URL, queue="q", **kw),
        "RpcClient": lambda **kw: RpcClient(URL, **kw),
        "RpcServer": lambda **kw: RpcServer(URL, **kw),
        "WorkerPool": lambda **kw: WorkerPool(URL, queue="q", handler=_handler, **kw),
        "TaskQueue": lambda **kw: TaskQueue(URL, queue="q", **kw),
    },
}

# not a number at all: a TypeError everywhere (``prefetch="1"`` is the issue's example)
not_numbers = st.one_of(
    st.text(max_size=8),
    st.binary(max_size=4),
    st.booleans(),
    st.lists(st.integers(), max_size=2),
    st.just(object()),
)
# an int option given a float (even a whole one): a TypeError
floats_for_ints = st.floats(allow_nan=True, allow_infinity=True)
# a count out of range: a ValueError
bad_counts = st.one_of(st.integers(max_value=0), st.integers(min_value=70_000))
# a timeout that is no finite positive number of seconds: a ValueError
bad_seconds = st.one_of(
    st.floats(max_value=0), st.just(math.nan), st.just(math.inf), st.just(-math.inf)
)


def _outcome(build: Build, option: str, value: object) -> tuple[type[BaseException], str]:
    with pytest.raises((TypeError, ValueError)) as info:
        build(**{option: value})
    return type(info.value), str(info.value)


def _same_everywhere(option: str, value: object) -> tuple[type[BaseException], str]:
    results = {name: _outcome(build, option, value) for name, build in TAKES[option].items()}
    kinds = {kind for kind, _ in results.values()}
    assert len(kinds) == 1, f"{option}={value!r}: {results}"
    kind, first = next(iter(results.values()))
    for name, (_, message) in results.items():
        assert message.startswith(f"{option} must be "), (name, message)
        if kind is TypeError:
            # the type named the same way everywhere: "<option> must be ..., got <type> ..."
            assert message == first, (name, message, first)
    return kind, first


@settings(max_examples=40, deadline=None)
@given(option=st.sampled_from(["prefetch", "concurrency", "timeout"]), value=not_numbers)
def test_not_a_number_is_the_same_type_error_everywhere(option: str, value: object) -> None:
    kind, message = _same_everywhere(option, value)
    assert kind is TypeError
    assert re.search(rf"got {type(value).__name__}\b", message), message


def test_the_issue_example_prefetch_as_a_string() -> None:
    kind, message = _same_everywhere("prefetch", "1")
    assert kind is TypeError
    assert message == "prefetch must be an int, got str '1'"


@settings(max_examples=40, deadline=None)
@given(option=st.sampled_from(["prefetch", "concurrency"]), value=floats_for_ints)
def test_a_float_count_is_the_same_type_error_everywhere(option: str, value: float) -> None:
    kind, message = _same_everywhere(option, value)
    assert kind is TypeError and "must be an int, got float" in message


@settings(max_examples=40, deadline=None)
@given(value=bad_counts)
def test_prefetch_out_of_range_is_the_same_value_error_everywhere(value: int) -> None:
    kind, message = _same_everywhere("prefetch", value)
    assert kind is ValueError and message.endswith(f"got {value}")
    messages = {_outcome(b, "prefetch", value)[1] for b in TAKES["prefetch"].values()}
    assert len(messages) == 1, messages  # the same range everywhere


@settings(max_examples=40, deadline=None)
@given(value=bad_seconds)
def test_a_bad_timeout_is_the_same_value_error_everywhere(value: float) -> None:
    kind, _ = _same_everywhere("timeout", value)
    assert kind is ValueError
    messages = {_outcome(b, "timeout", value)[1] for b in TAKES["timeout"].values()}
    assert len(messages) == 1, messages
