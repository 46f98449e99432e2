"""Settings from the environment: HUTCH_URL and HUTCH_<FIELD>, below explicit arguments and URLs.

Precedence, for every field: explicit argument > URL > environment variable > default.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hutch
from hutch import ConnectionSettings
from hutch._connection import resolve_connection

SECRET = "s3cr3t-from-env"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # the suite itself may run with HUTCH_URL set: each test starts from nothing
    for name in [
        "HUTCH_URL",
        "HUTCH_USERNAME",
        "HUTCH_PASSWORD",
        "HUTCH_VHOST",
        "HUTCH_HEARTBEAT",
        "HUTCH_CONNECTION_NAME",
        "HUTCH_CONNECT_TIMEOUT",
        "HUTCH_BLOCKED_CONNECTION_TIMEOUT",
        "HUTCH_PUBLISH_BLOCKED_TIMEOUT",
        "HUTCH_MAX_MESSAGE_SIZE",
    ]:
        monkeypatch.delenv(name, raising=False)


def test_hutch_url_is_the_default_url(monkeypatch: pytest.MonkeyPatch) -> None:
    assert str(ConnectionSettings.from_environment().addresses[0]) == "localhost:5672"
    monkeypatch.setenv("HUTCH_URL", "amqp://ada:pw@rabbit.example:5673/prod")
    for settings_ in (
        ConnectionSettings.from_environment(),
        hutch.Connection().settings,
        resolve_connection(None)[0].settings,
    ):
        assert str(settings_.addresses[0]) == "rabbit.example:5673"
        assert (settings_.username, settings_.password.get_secret_value(), settings_.vhost) == (
            "ada",
            "pw",
            "prod",
        )
    # an explicit URL wins over HUTCH_URL
    assert hutch.Connection("amqp://other/").settings.addresses[0].host == "other"
    assert resolve_connection("amqp://other/")[0].settings.addresses[0].host == "other"


def test_every_class_that_takes_a_url_defaults_to_hutch_url(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HUTCH_URL", "amqp://rabbit.example:5673/")
    made = [
        hutch.Publisher(exchange="x"),
        hutch.Subscriber(exchange="x"),
        hutch.WorkerPool(queue="q", handler=print),
        hutch.TaskQueue(queue="q"),
        hutch.RpcServer(queue="q"),
        hutch.RpcClient(queue="q"),
    ]
    for obj in made:
        inner: Any = getattr(obj, "_publisher", obj)  # a TaskQueue publishes via a Publisher
        assert str(inner._conn.settings.addresses[0]) == "rabbit.example:5673", type(obj)
        assert inner._owns_conn


def test_precedence_argument_then_url_then_environment_then_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HUTCH_HEARTBEAT", "20")
    monkeypatch.setenv("HUTCH_VHOST", "from-env")
    monkeypatch.setenv("HUTCH_CONNECT_TIMEOUT", "2.5")
    # the environment beats the default
    s = ConnectionSettings.from_environment("amqp://h/")
    assert (s.heartbeat, s.vhost, s.connect_timeout) == (20, "from-env", 2.5)
    # the URL beats the environment
    s = ConnectionSettings.from_environment("amqp://h/from-url?heartbeat=10")
    assert (s.heartbeat, s.vhost, s.connect_timeout) == (10, "from-url", 2.5)
    # an explicit argument beats both
    s = hutch.Connection("amqp://h/from-url?heartbeat=10", heartbeat=5, vhost="arg").settings
    assert (s.heartbeat, s.vhost, s.connect_timeout) == (5, "arg", 2.5)
    # defaults where nobody says anything
    monkeypatch.delenv("HUTCH_HEARTBEAT")
    assert ConnectionSettings.from_environment("amqp://h/").heartbeat == 30
    # explicit settings do not read the environment at all
    ready = ConnectionSettings.from_url("amqp://h/")
    assert ready.vhost == "/"
    assert hutch.Connection(settings=ready).settings.vhost == "/"


def test_credentials_from_the_environment_unless_the_url_names_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HUTCH_USERNAME", "svc")
    monkeypatch.setenv("HUTCH_PASSWORD", SECRET)
    s = ConnectionSettings.from_environment("amqp://rabbit/")
    assert (s.username, s.password.get_secret_value()) == ("svc", SECRET)
    assert SECRET not in repr(s) and SECRET not in str(hutch.Connection("amqp://rabbit/"))
    s = ConnectionSettings.from_environment("amqp://url-user:url-pw@rabbit/")
    assert (s.username, s.password.get_secret_value()) == ("url-user", "url-pw")
    # an empty variable is no setting
    monkeypatch.setenv("HUTCH_USERNAME", "")
    assert ConnectionSettings.from_environment("amqp://rabbit/").username == "guest"


def test_a_bad_variable_is_named_and_its_value_not_echoed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HUTCH_HEARTBEAT", "99999999-" + SECRET)
    with pytest.raises(ValueError, match="HUTCH_HEARTBEAT") as info:
        hutch.Connection("amqp://h/")
    assert SECRET not in str(info.value)
    # an explicit argument replaces the bad variable
    assert hutch.Connection("amqp://h/", heartbeat=3).settings.heartbeat == 3
    monkeypatch.setenv("HUTCH_HEARTBEAT", "70000")
    with pytest.raises(ValueError, match="HUTCH_HEARTBEAT"):
        ConnectionSettings.from_environment()
    # a malformed HUTCH_URL is refused like a malformed argument, without echoing it
    monkeypatch.delenv("HUTCH_HEARTBEAT")
    monkeypatch.setenv("HUTCH_URL", f"amqp://user:{SECRET}/x@host/")
    with pytest.raises(ValueError, match="percent-encoded") as info:
        hutch.connect()
    assert SECRET not in str(info.value)


def test_other_hutch_variables_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUTCH_TEST_AMQP_URL", "amqp://elsewhere/")
    monkeypatch.setenv("HUTCH_EXAMPLE_PREFIX", "x")
    assert ConnectionSettings.from_environment().addresses[0].host == "localhost"


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    heartbeat=st.integers(0, 65535),
    env_heartbeat=st.integers(0, 65535),
    url_heartbeat=st.none() | st.integers(0, 65535),
    arg_heartbeat=st.none() | st.integers(0, 65535),
)
def test_precedence_holds_for_any_values(
    monkeypatch: pytest.MonkeyPatch,
    heartbeat: int,
    env_heartbeat: int,
    url_heartbeat: int | None,
    arg_heartbeat: int | None,
) -> None:
    del heartbeat
    monkeypatch.setenv("HUTCH_HEARTBEAT", str(env_heartbeat))
    url = "amqp://h/" + ("" if url_heartbeat is None else f"?heartbeat={url_heartbeat}")
    kwargs = {} if arg_heartbeat is None else {"heartbeat": arg_heartbeat}
    got = ConnectionSettings.from_environment(url, **kwargs).heartbeat
    expected = next(v for v in (arg_heartbeat, url_heartbeat, env_heartbeat) if v is not None)
    assert got == expected


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["HUTCH_VHOST", "hutch_heartbeat", "HUTCH_UNRELATED"]),
            st.one_of(st.none(), st.sampled_from(["", "a", "b", "7", "30"])),
        ),
        max_size=8,
    )
)
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
def test_every_read_sees_the_variables_as_they_are_now(
    monkeypatch: pytest.MonkeyPatch, changes: list[tuple[str, str | None]]
) -> None:
    # the environment is read once per set of HUTCH_* variables: a change (in any case, or
    # a variable unset) is seen by the next settings, never an older answer
    for name in ("HUTCH_VHOST", "hutch_heartbeat", "HUTCH_UNRELATED"):
        monkeypatch.delenv(name, raising=False)
    for name, value in changes:
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
        heartbeat = os.environ.get("hutch_heartbeat") or "30"  # noqa: SIM112 (its case is the point)
        if heartbeat in {"a", "b"}:
            with pytest.raises(ValueError, match="HUTCH_HEARTBEAT"):
                ConnectionSettings.from_environment()
            continue
        now = ConnectionSettings.from_environment()
        assert now.vhost == (os.environ.get("HUTCH_VHOST") or "/")
        assert now.heartbeat == int(heartbeat)
