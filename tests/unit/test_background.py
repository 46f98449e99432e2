"""tests.background runs the integration tests' programs beside them, a few at a time."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.background import Program, Programs

PY = sys.executable


def program(code: str, *, timeout: float = 30, **kwargs: object) -> Program:
    return Program([PY, "-c", code], env={}, timeout=timeout, **kwargs)  # type: ignore[arg-type]


def test_no_more_than_the_limit_run_at_once_and_every_one_gets_its_result(tmp_path: Path) -> None:
    # each program records when it ran; with a limit of 2, no three overlap
    programs = Programs(limit=2)
    for i in range(5):
        code = (
            "import sys, time; s = time.time(); time.sleep(0.2);"
            f"open(sys.argv[1], 'a').write(f'{{s}} {{time.time()}}\\n'); print({i})"
        )
        programs.add(str(i), Program([PY, "-c", code, str(tmp_path / "log")], env={}, timeout=30))
    programs.pump()
    assert [programs.result(str(i)).stdout for i in reversed(range(5))] == [
        f"{i}\n" for i in reversed(range(5))
    ]
    spans = [
        tuple(map(float, line.split()))
        for line in (tmp_path / "log").read_text().split("\n")
        if line
    ]
    assert len(spans) == 5
    for start, _ in spans:
        assert sum(s <= start < e for s, e in spans) <= 2  # itself and at most one other


def test_the_longest_expected_starts_first() -> None:
    programs = Programs(limit=1)
    programs.add("short", program("print('short')"))
    programs.add("long", program("print('long')", expected=5.0))
    programs.pump()
    assert programs._entries["long"].run is not None
    assert programs._entries["short"].run is None
    programs.close()


def test_cleanup_runs_once_after_the_end_even_of_a_failed_program() -> None:
    calls: list[str] = []
    programs = Programs()
    programs.add("ok", program("print(1)", cleanup=lambda: calls.append("ok")))
    programs.add("bad", program("raise SystemExit(3)", cleanup=lambda: calls.append("bad")))
    assert programs.result("bad").returncode == 3
    assert "bad" in calls
    programs.result("ok")
    programs.result("ok")
    programs.finish("")
    assert sorted(calls) == ["bad", "ok"]


def test_a_program_past_its_timeout_is_killed_and_reported_to_its_test() -> None:
    calls: list[str] = []
    programs = Programs()
    programs.add(
        "slow",
        program("import time; time.sleep(60)", timeout=0.3, cleanup=lambda: calls.append("x")),
    )
    started = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired):
        programs.result("slow")
    assert time.monotonic() - started < 10 and calls == ["x"]
    with pytest.raises(subprocess.TimeoutExpired):  # the same report each time it is asked
        programs.result("slow")


def test_a_program_that_cannot_start_is_reported_to_its_test() -> None:
    programs = Programs()
    programs.add("wrong", Program(["python3", "-m", "json.tool"], env={}, timeout=5))
    with pytest.raises(ValueError, match=r"sys\.executable"):
        programs.result("wrong")


def test_close_ends_the_running_ones_cleans_up_and_drops_the_queued_ones(
    tmp_path: Path,
) -> None:
    # close() runs when the tests that would take the results did not run (-x, Ctrl-C)
    calls: list[str] = []
    programs = Programs(limit=1)
    mark = tmp_path / "ran"
    programs.add(
        "first",
        program(
            f"import time; time.sleep(30); open({str(mark)!r}, 'w')",
            cleanup=lambda: calls.append("first"),
        ),
    )
    programs.add("second", program("print(2)", cleanup=lambda: calls.append("second")))
    programs.pump()
    started = time.monotonic()
    programs.close()
    assert time.monotonic() - started < 10
    assert not mark.exists() and calls == ["first"]
    with pytest.raises(subprocess.TimeoutExpired):  # killed
        programs.result("first")


def test_a_key_is_queued_once() -> None:
    programs = Programs()
    programs.add("a", program("pass"))
    with pytest.raises(ValueError, match="already queued"):
        programs.add("a", program("pass"))
    programs.close()


def test_a_failed_cleanup_is_reported_to_its_programs_test_only() -> None:
    def broken() -> None:
        raise ConnectionError("the broker went away")

    programs = Programs()
    programs.add("mine", program("print(1)", cleanup=broken))
    programs.add("other", program("print(2)"))
    programs.pump()
    run = programs._entries["mine"].run
    assert run is not None
    while not run.done():
        time.sleep(0.01)
    programs.pump()  # collects "mine", as between two tests: must not raise here
    assert programs.result("other").stdout == "2\n"
    with pytest.raises(ConnectionError, match="went away"):
        programs.result("mine")
