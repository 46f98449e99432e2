"""tests.forkserver runs a program as ``python -c``/``python SCRIPT`` would, in a fork.

Every behaviour test runs twice: through the fork server and through plain ``subprocess.run``
(``HUTCH_TEST_NO_FORKSERVER=1``), which shows the two agree.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests import forkserver

PY = sys.executable


@pytest.fixture(params=["forkserver", "subprocess"])
def mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Which way :func:`forkserver.run` runs the program in this test."""
    monkeypatch.setenv("HUTCH_TEST_NO_FORKSERVER", "1" if request.param == "subprocess" else "")
    return str(request.param)


def run_code(code: str, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return forkserver.run([PY, "-c", code, *args], env={"X": "1"}, timeout=timeout)


@pytest.mark.usefixtures("mode")
def test_stdout_and_stderr_are_captured_apart() -> None:
    code = "import sys; print('out ✓'); print('err', file=sys.stderr); print('out 2')"
    result = run_code(code)
    assert (result.returncode, result.stdout, result.stderr) == (0, "out ✓\nout 2\n", "err\n")
    assert result.args == [PY, "-c", code]


@pytest.mark.usefixtures("mode")
@pytest.mark.parametrize(
    ("code", "status", "stderr"),
    [
        ("pass", 0, ""),
        ("import sys; sys.exit(3)", 3, ""),
        ("import sys; sys.exit(None)", 0, ""),
        ("import sys; sys.exit('bye')", 1, "bye\n"),
        ("raise KeyboardInterrupt", -2, "KeyboardInterrupt\n"),
        ("import os; os.abort()", -6, ""),
    ],
)
def test_exit_status(code: str, status: int, stderr: str) -> None:
    result = run_code(code)
    assert result.returncode == status
    assert result.stderr.endswith(stderr)


@pytest.mark.usefixtures("mode")
def test_an_uncaught_exception_prints_its_traceback_and_exits_1() -> None:
    result = run_code("def f():\n    1 / 0\nf()")
    assert result.returncode == 1 and result.stdout == ""
    # Python 3.13 also prints the lines of -c code under each frame (a forked child does
    # not): compare the frames and the error
    assert [line for line in result.stderr.splitlines() if not line.startswith("    ")] == [
        "Traceback (most recent call last):",
        '  File "<string>", line 3, in <module>',
        '  File "<string>", line 2, in f',
        "ZeroDivisionError: division by zero",
    ]


@pytest.mark.usefixtures("mode")
def test_non_daemon_threads_and_atexit_run_before_the_end() -> None:
    code = """if True:
        import atexit, sys, threading, time
        atexit.register(print, "atexit")
        threading.Thread(target=lambda: (time.sleep(0.2), print("thread"))).start()
        sys.exit(5)
    """
    result = run_code(code)
    assert (result.returncode, result.stdout) == (5, "thread\natexit\n")


def test_env_cwd_argv_and_main_are_those_of_the_program(
    mode: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ONLY_IN_THE_TEST_PROCESS", "1")
    code = """if True:
        import os, sys
        print(__name__, os.getcwd(), sys.argv, repr(sys.path[0]))
        print(os.environ.get("X"), os.environ.get("ONLY_IN_THE_TEST_PROCESS"))
        print(sys.stdin.read() == "")
    """
    argv = [PY, "-c", code, "a", "b c"]
    result = forkserver.run(argv, env={"X": "2"}, cwd=tmp_path, timeout=30)
    assert result.returncode == 0, result.stderr
    real = os.path.realpath(tmp_path)
    assert result.stdout.splitlines() == [
        f"__main__ {real} ['-c', 'a', 'b c'] ''",
        "2 None",
        "True",
    ]


def test_a_script_runs_as_python_runs_it(
    mode: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "helper.py").write_text("VALUE = 'helper'\n")
    script = tmp_path / "pkg" / "script.py"
    script.write_text(
        "import os, sys, helper\n"
        "print(__name__, __file__, sys.argv, sys.path[0], helper.VALUE, os.getcwd())\n"
        "import __main__; print(__main__.__file__ == __file__)\n"
    )
    monkeypatch.chdir(tmp_path)  # cwd=None: the test process's cwd
    result = forkserver.run([PY, "pkg/script.py", "x"], env={}, timeout=30)
    assert result.returncode == 0, result.stderr
    where = os.path.realpath(tmp_path / "pkg")
    assert result.stdout.splitlines() == [
        f"__main__ {tmp_path / 'pkg' / 'script.py'} ['pkg/script.py', 'x'] {where} helper "
        f"{os.path.realpath(tmp_path)}",
        "True",
    ]
    missing = forkserver.run([PY, "missing.py"], env={}, timeout=30)
    assert missing.returncode == 2 and "can't open file" in missing.stderr


@pytest.mark.usefixtures("mode")
def test_a_timeout_kills_the_program(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    code = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(60)"
    started = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired) as caught:
        run_code(code, timeout=0.5)
    assert time.monotonic() - started < 10
    assert caught.value.timeout == 0.5
    with pytest.raises(ProcessLookupError):  # killed and reaped
        os.kill(int(pid_file.read_text()), 0)


@pytest.mark.usefixtures("mode")
def test_runs_do_not_share_module_state() -> None:
    code = "import json; print(getattr(json, 'mark', None), globals().get('G')); json.mark = G = 1"
    assert [run_code(code).stdout for _ in range(2)] == ["None None\n", "None None\n"]


@pytest.mark.usefixtures("mode")
def test_runs_from_several_threads_proceed_together() -> None:
    code = "import sys, time; time.sleep(0.5); print(sys.argv[1])"
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(lambda i: run_code(code, str(i)), range(6)))
    assert [r.stdout for r in results] == [f"{i}\n" for i in range(6)]
    assert time.monotonic() - started < 2.5  # one after the other would take 3 s


def test_a_fork_server_run_is_a_fork_of_a_process_that_imported_hutch(mode: str) -> None:
    result = run_code("import os, sys; print('hutch' in sys.modules, os.getppid())")
    preloaded, parent = result.stdout.split()
    assert preloaded == str(mode == "forkserver")
    assert (int(parent) == os.getpid()) == (mode == "subprocess")  # pytest itself never forks


@pytest.mark.parametrize(
    "argv",
    [[], [PY], [PY, "-m", "json.tool"], [PY, "-c"], ["python3", "-c", "pass"], [PY, "-X", "x.py"]],
)
def test_other_command_lines_are_refused(argv: list[str]) -> None:
    with pytest.raises(ValueError, match=r"sys\.executable"):
        forkserver.run(argv, env={}, timeout=5)


def test_a_zygote_starts_without_waiting_and_is_waited_for_once() -> None:
    # prestart() during collection must not wait for the zygote's imports; the first run
    # waits for its "ready", later ones do not read it again
    server = forkserver._Server()
    try:
        assert server.ready is False and server.proc.poll() is None
        server.wait_ready()
        server.wait_ready()  # a second "ready" would never come: this must not read again
        assert server.ready is True
    finally:
        server.close()
    assert server.proc.returncode is not None


@pytest.mark.usefixtures("mode")
def test_a_started_program_runs_while_the_caller_goes_on() -> None:
    started = time.monotonic()
    run = forkserver.start(
        [PY, "-c", "import time; time.sleep(0.3); print('done')"], env={}, timeout=30
    )
    assert time.monotonic() - started < 0.25 and not run.done()  # start did not wait
    while not run.done():
        time.sleep(0.01)
    assert time.monotonic() - started >= 0.3
    result = run.result()
    assert (result.returncode, result.stdout) == (0, "done\n")
    assert run.done() and run.result() is result


@pytest.mark.usefixtures("mode")
def test_a_started_program_past_its_timeout_is_killed_when_its_result_is_taken() -> None:
    run = forkserver.start([PY, "-c", "import time; time.sleep(60)"], env={}, timeout=0.3)
    with pytest.raises(subprocess.TimeoutExpired):
        run.result()
    assert run.done()


@pytest.mark.usefixtures("mode")
def test_a_started_program_can_be_made_nicer() -> None:
    code = "import os; print(os.nice(0))"
    result = forkserver.start([PY, "-c", code], env={}, timeout=30, nice=5).result()
    assert int(result.stdout) == os.nice(0) + 5
