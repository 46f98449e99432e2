"""``tracing``: a connection setting, from an argument or ``HUTCH_TRACING``."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hutch
from hutch import ConnectionSettings

# what pydantic reads as a boolean from text, in any letter case
FALSE_WORDS = ["false", "0", "no", "off", "f", "n"]
TRUE_WORDS = ["true", "1", "yes", "on", "t", "y"]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ["HUTCH_URL", "HUTCH_TRACING"]:
        monkeypatch.delenv(name, raising=False)


def test_on_by_default() -> None:
    assert ConnectionSettings.from_url("amqp://h/").tracing is True
    assert ConnectionSettings.from_environment().tracing is True


def test_connect_accepts_tracing_false_without_io() -> None:
    # Connection() validates its settings and does no I/O: nothing listens on port 1
    conn = hutch.Connection("amqp://127.0.0.1:1/", tracing=False)
    assert conn.settings.tracing is False
    assert ConnectionSettings.from_url("amqp://h/", tracing=False).tracing is False


def test_tracing_false_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUTCH_TRACING", "false")
    assert hutch.Connection("amqp://h/").settings.tracing is False
    # an explicit argument wins over the variable
    assert hutch.Connection("amqp://h/", tracing=True).settings.tracing is True
    # an empty variable is no setting
    monkeypatch.setenv("HUTCH_TRACING", "")
    assert ConnectionSettings.from_environment().tracing is True


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    word=st.sampled_from(FALSE_WORDS + TRUE_WORDS),
    upper=st.lists(st.booleans(), min_size=5, max_size=5),
)
def test_boolean_words_in_any_case(
    monkeypatch: pytest.MonkeyPatch, word: str, upper: list[bool]
) -> None:
    text = "".join(c.upper() if up else c for c, up in zip(word, upper[: len(word)], strict=True))
    monkeypatch.setenv("HUTCH_TRACING", text)
    assert ConnectionSettings.from_environment().tracing is (word in TRUE_WORDS)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    text=st.text(min_size=1, max_size=20).filter(
        lambda t: (
            "\x00" not in t and t.strip() and t.strip().lower() not in FALSE_WORDS + TRUE_WORDS
        )
    )
)
def test_anything_else_names_the_variable_without_echoing_it(
    monkeypatch: pytest.MonkeyPatch, text: str
) -> None:
    monkeypatch.setenv("HUTCH_TRACING", text)
    with pytest.raises(ValueError, match="HUTCH_TRACING") as info:
        ConnectionSettings.from_environment()
    assert repr(text) not in str(info.value)


@pytest.mark.parametrize("value", ["maybe", 2, 0.5, None, [True]])
def test_a_bad_argument_is_refused_at_once(value: object) -> None:
    with pytest.raises(ValueError, match="tracing"):
        hutch.Connection("amqp://h/", tracing=value)
