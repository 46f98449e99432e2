"""The pytest plugin's own behaviour, without a broker: header line, one-line stops, installs."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import hutch.testing
from hutch.testing import _install, _plugin

passwords = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=8
).filter(lambda p: p.strip() == p and "*" not in p)

TINY_SUITE = """
def test_without_broker():
    pass

def test_needs_broker(hutch_connection):
    pass

def test_needs_broker_too(hutch_connection):
    pass
"""


def run_pytest(
    tmp_path: Path, env: dict[str, str], suite: str = TINY_SUITE
) -> subprocess.CompletedProcess[str]:
    """Run ``suite`` in a fresh pytest process with the plugin and ``env``."""
    (tmp_path / "test_tiny.py").write_text(textwrap.dedent(suite))
    base = {
        k: v for k, v in os.environ.items() if not k.startswith(("HUTCH_", "PYTEST_", "DOCKER_"))
    }
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--rootdir", str(tmp_path)],
        cwd=tmp_path,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_broker_is_a_public_type_of_hutch_testing() -> None:
    assert "Broker" in hutch.testing.__all__
    assert hutch.testing.Broker.__module__.startswith("hutch.testing")
    assert sorted(hutch.testing.__all__) == hutch.testing.__all__
    for name in hutch.testing.__all__:
        assert getattr(hutch.testing, name) is not None
    # the names of the single-module hutch.testing stay importable
    from hutch.testing import (  # noqa: F401
        amqp_url,
        hutch_broker,
        hutch_connection,
        throwaway_broker,
        unique_name,
    )


@settings(max_examples=40, deadline=None)
@given(password=passwords, user=st.from_regex(r"[a-z][a-z0-9_]{0,11}", fullmatch=True))
def test_header_names_the_url_without_its_password(password: str, user: str) -> None:
    url = f"amqp://{user}:{quote(password, safe='')}@rabbit.example:5673/%2F"
    line = _plugin.broker_header(
        {"HUTCH_TEST_AMQP_URL": url},
        docker_answers=True,
        local_installed=True,
        install_refusal=None,
    )
    expected = f"hutch broker: amqp://{user}:***@rabbit.example:5673/%2F (from HUTCH_TEST_AMQP_URL)"
    # the whole line is the template with *** for the password: the password is nowhere
    # in it (checking "password not in line" fails for one that is part of the line's own
    # words, as "HUTCH_TE" is)
    assert line == expected


@pytest.mark.parametrize(
    ("env", "docker", "installed", "refusal", "expected"),
    [
        ({}, True, True, None, "container (rabbitmq:3.13)"),
        ({"HUTCH_TEST_BROKER": "local"}, True, True, None, "local node (rabbitmq-server)"),
        ({}, False, True, "x", "local node (rabbitmq-server)"),
        ({}, False, False, None, "local node, after installing rabbitmq-server"),
        ({}, False, False, "set HUTCH_TEST_INSTALL_BROKER=1", "none available"),
        ({"HUTCH_TEST_BROKER": "docker"}, False, True, None, "none (HUTCH_TEST_BROKER=docker"),
    ],
)
def test_header_names_the_kind_of_broker(
    env: dict[str, str], docker: bool, installed: bool, refusal: str | None, expected: str
) -> None:
    line = _plugin.broker_header(
        env, docker_answers=docker, local_installed=installed, install_refusal=refusal
    )
    assert line.startswith(f"hutch broker: {expected}")
    if refusal is not None and not installed and expected == "none available":
        assert refusal in line


def test_header_line_is_printed_by_pytest(tmp_path: Path) -> None:
    url = "amqp://guest:S3CRETpw@127.0.0.1:1/%2F"
    done = run_pytest(tmp_path, {"HUTCH_TEST_AMQP_URL": url}, "def test_ok():\n    pass\n")
    assert done.returncode == 0, done.stdout + done.stderr
    header = [line for line in done.stdout.splitlines() if line.startswith("hutch broker:")]
    assert header == ["hutch broker: amqp://guest:***@127.0.0.1:1/%2F (from HUTCH_TEST_AMQP_URL)"]
    assert "S3CRETpw" not in done.stdout + done.stderr


def test_no_broker_stops_the_session_with_one_line(tmp_path: Path) -> None:
    empty = tmp_path / "no-rabbitmq"
    empty.mkdir()
    done = run_pytest(
        tmp_path, {"HUTCH_TEST_BROKER": "local", "HUTCH_RABBITMQ_BIN_DIR": str(empty)}
    )
    out = done.stdout + done.stderr
    assert done.returncode != 0
    lines = [line for line in out.splitlines() if "no RabbitMQ broker available" in line]
    assert len(lines) == 1, out
    assert "HUTCH_TEST_INSTALL_BROKER=1" in lines[0]
    assert "Traceback" not in out and "During handling" not in out
    assert "1 passed" in out  # the test that needs no broker ran


@settings(max_examples=60, deadline=None)
@given(
    value=st.one_of(st.none(), st.text(max_size=5)),
    bin_dir_set=st.booleans(),
    is_root=st.booleans(),
    is_debian=st.booleans(),
    has_apt_get=st.booleans(),
)
def test_apt_get_only_when_asked_for(
    value: str | None, bin_dir_set: bool, is_root: bool, is_debian: bool, has_apt_get: bool
) -> None:
    environ = {} if value is None else {"HUTCH_TEST_INSTALL_BROKER": value}
    if bin_dir_set:
        environ["HUTCH_RABBITMQ_BIN_DIR"] = "/opt/rabbitmq/bin"
    refusal = _install.install_refusal(
        environ, is_root=is_root, is_debian=is_debian, has_apt_get=has_apt_get
    )
    allowed = (
        value is not None
        and value.strip() == "1"
        and not bin_dir_set
        and is_root
        and is_debian
        and has_apt_get
    )
    assert (refusal is None) == allowed
    if value is None or value.strip() != "1":
        assert refusal is not None and "HUTCH_TEST_INSTALL_BROKER=1" in refusal


def test_missing_server_runs_no_apt_get_without_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ran: list[object] = []
    monkeypatch.delenv("HUTCH_TEST_INSTALL_BROKER", raising=False)
    monkeypatch.delenv("HUTCH_RABBITMQ_BIN_DIR", raising=False)
    monkeypatch.setattr(_install, "local_server_installed", lambda: False)
    monkeypatch.setattr("hutch.testing._install.subprocess.run", lambda *a, **k: ran.append(a))
    with pytest.raises(hutch.testing.BrokerUnavailable, match="HUTCH_TEST_INSTALL_BROKER=1"):
        _install.ensure_local_server()
    assert ran == []
