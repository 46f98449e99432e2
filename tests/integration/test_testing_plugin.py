"""The pytest plugin against a real broker: a refused HUTCH_TEST_AMQP_URL is one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote, urlsplit

import pytest

from hutch.testing import _plugin

pytestmark = pytest.mark.rabbitmq_only("tests how the plugin acquires a real broker")

TINY_SUITE = """
def test_without_broker():
    pass

def test_needs_broker(hutch_connection):
    pass

def test_needs_broker_too(amqp_url):
    pass
"""


def with_password(url: str, password: str) -> str:
    parts = urlsplit(url)
    netloc = f"{parts.username}:{quote(password, safe='')}@{parts.hostname}:{parts.port}"
    return parts._replace(netloc=netloc).geturl()


@pytest.mark.parametrize("password", ["WRONGPASS", "wr0ng:p@ss/wörd%2F"])
def test_wrong_password_is_one_line_naming_the_variable(
    amqp_url: str, tmp_path: Path, password: str
) -> None:
    (tmp_path / "test_tiny.py").write_text(TINY_SUITE)
    bad = with_password(amqp_url, password)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HUTCH_", "PYTEST_"))}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--rootdir", str(tmp_path)],
        cwd=tmp_path,
        env={**env, "HUTCH_TEST_AMQP_URL": bad},
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = done.stdout + done.stderr
    assert done.returncode != 0
    failures = [line for line in out.splitlines() if "authentication failed" in line]
    assert len(failures) == 1, out
    parts = urlsplit(amqp_url)
    assert (
        f"HUTCH_TEST_AMQP_URL: authentication failed for user 'guest' at "
        f"{parts.hostname}:{parts.port}"
    ) in failures[0]
    assert password not in out and quote(password, safe="") not in out
    assert "Traceback" not in out and "During handling" not in out
    assert "1 passed" in out  # the test that needs no broker ran
    assert len(out.splitlines()) < 20, out


def test_login_check_passes_for_the_right_url(amqp_url: str) -> None:
    assert _plugin.external_login_problem(amqp_url) is None


def test_login_check_names_an_unknown_vhost(amqp_url: str) -> None:
    url = amqp_url.rsplit("/", 1)[0] + "/no-such-vhost"
    problem = _plugin.external_login_problem(url)
    assert problem is not None
    assert problem.startswith("HUTCH_TEST_AMQP_URL: access refused for user 'guest' at ")
    assert "\n" not in problem and "guest:guest" not in problem
