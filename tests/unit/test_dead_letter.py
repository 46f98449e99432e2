"""The headers of a failed message's copies (dead letter, retry): pure logic, no broker."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from hutch._dead_letter import dead_letter_headers, failure_headers, retry_headers
from hutch._retry import ATTEMPTS_HEADER, RETRY_OF_HEADER, attempts_made

_DEATHS = ("x-death", "x-first-death-reason", "x-first-death-queue", "x-last-death-exchange")

_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=8), st.binary(max_size=8)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)
_headers = st.dictionaries(
    st.one_of(
        st.sampled_from(
            [*_DEATHS, ATTEMPTS_HEADER, RETRY_OF_HEADER, "x-hutch-error", "x-hutch-error-type"]
        ),
        st.text(max_size=12),
    ),
    _values,
    max_size=8,
)


@settings(max_examples=150, deadline=None)
@given(headers=_headers, attempts=st.integers(min_value=1, max_value=50))
def test_a_retry_copy_carries_hutchs_count_and_no_x_death(
    headers: dict[str, Any], attempts: int
) -> None:
    before = dict(headers)
    out = retry_headers(
        headers, reason="boom", error_type="ValueError", attempts=attempts, queue="q"
    )
    assert headers == before  # the original is not changed
    assert not any(k == "x-death" or k.startswith(("x-first-death-", "x-last-death-")) for k in out)
    assert out[ATTEMPTS_HEADER] == attempts and out[RETRY_OF_HEADER] == "q"
    assert (out["x-hutch-error"], out["x-hutch-error-type"]) == ("boom", "ValueError")
    # the next worker reads back exactly the count written, whatever came in
    assert attempts_made(out, "q") == attempts
    assert attempts_made(out, "other-queue") == 0
    kept = {
        k: v
        for k, v in headers.items()
        if k
        not in (*_DEATHS, ATTEMPTS_HEADER, RETRY_OF_HEADER, "x-hutch-error", "x-hutch-error-type")
        and not k.startswith(("x-first-death-", "x-last-death-"))
        and k != "x-death"
    }
    assert {k: out[k] for k in kept} == kept  # everything else travels unchanged


@settings(max_examples=150, deadline=None)
@given(headers=_headers, attempts=st.one_of(st.none(), st.integers(min_value=1, max_value=50)))
def test_a_dead_letter_keeps_the_history_but_not_the_retry_marker(
    headers: dict[str, Any], attempts: int | None
) -> None:
    out = dead_letter_headers(
        headers,
        reason="x" * 5000,
        error_type="Reject",
        attempts=attempts,
        exchange="ex",
        routing_key="rk",
        queue="q",
    )
    assert RETRY_OF_HEADER not in out  # replayed into its queue, it starts afresh
    assert attempts_made(out, "q") == 0
    for k in _DEATHS:
        if k in headers:
            assert out[k] == headers[k]  # RabbitMQ's history stays for the reader
    assert len(out["x-hutch-error"]) == 2000
    assert out.get(ATTEMPTS_HEADER) == attempts
    assert (out["x-hutch-original-exchange"], out["x-hutch-original-routing-key"]) == ("ex", "rk")
    assert out["x-hutch-original-queue"] == "q" and "x-hutch-failed-at" in out


def test_one_builder_for_both_copies() -> None:
    retry = failure_headers(
        {"x-death": [], "a": 1}, reason="r", error_type="E", attempts=2, retry_of="q"
    )
    dead = failure_headers(
        {"x-death": [], "a": 1}, reason="r", error_type="E", attempts=2, origin=("", "q", "q")
    )
    assert retry == {
        "a": 1,
        "x-hutch-error": "r",
        "x-hutch-error-type": "E",
        "x-hutch-attempts": 2,
        "x-hutch-retry-of": "q",
    }
    assert dead["x-death"] == [] and dead["a"] == 1 and "x-hutch-retry-of" not in dead
