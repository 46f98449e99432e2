"""``--metrics-port`` without a broker: bad values, a missing extra, a port in use.

Each failure must come before the command connects: the URL given points at port 1, where
nothing listens, so a command that tried to connect first would report that instead.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hutch._cli import build_parser

pytestmark = pytest.mark.timeout(120)

NOWHERE = "amqp://guest:guest@127.0.0.1:1/"
HINT = "pip install 'hutch[prometheus]'"


def hutch_cli(cwd: Path, *argv: str, block: tuple[str, ...] = ()) -> tuple[int, str]:
    """Run the command line in a fresh interpreter with the ``block`` modules unimportable."""
    code = (
        "import sys\n"
        f"for name in {block!r}:\n"
        "    sys.modules[name] = None\n"
        "from hutch._cli import main\n"
        f"sys.exit(main({list(argv)!r}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=60
    )
    return done.returncode, done.stderr


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "metrics_tasks.py").write_text("def handle(body: bytes) -> None:\n    pass\n")
    (tmp_path / "metrics_rpc.py").write_text(
        "import hutch\n\nserver = hutch.RpcServer()\n\n\n"
        "@server.procedure\ndef ping() -> str:\n    return 'pong'\n"
    )
    return tmp_path


@pytest.mark.parametrize(
    "block",
    [
        ("prometheus_client",),
        ("opentelemetry.exporter.prometheus",),
        ("opentelemetry.sdk", "opentelemetry.sdk.metrics"),
    ],
    ids=["prometheus-client", "exporter", "sdk"],
)
@pytest.mark.parametrize("command", ["worker", "serve"])
def test_a_missing_extra_is_one_line_saying_what_to_install(
    workdir: Path, block: tuple[str, ...], command: str
) -> None:
    target = (
        ["metrics_tasks:handle", "--queue", "q"] if command == "worker" else ["metrics_rpc:server"]
    )
    code, err = hutch_cli(
        workdir, "--url", NOWHERE, command, *target, "--metrics-port", "0", block=block
    )
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1, err
    assert len(lines) == 1 and lines[0].startswith("hutch: error: "), err
    assert HINT in lines[0], err


def test_a_port_in_use_fails_before_connecting(workdir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, err = hutch_cli(
            workdir,
            "--url",
            NOWHERE,
            "worker",
            "metrics_tasks:handle",
            "--queue",
            "q",
            "--metrics-port",
            str(port),
            "--metrics-host",
            "127.0.0.1",
        )
    assert code == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"hutch: error: cannot serve metrics on 127.0.0.1:{port}: "), err


def test_the_options_default_to_off_and_every_interface() -> None:
    for argv in (["worker", "m:f", "--queue", "q"], ["serve", "m:s"]):
        args = build_parser().parse_args(argv)
        assert args.metrics_port is None
        assert args.metrics_host == "0.0.0.0"
        args = build_parser().parse_args([*argv, "--metrics-port", "9102"])
        assert args.metrics_port == 9102


@settings(max_examples=50, deadline=None)
@given(
    value=st.one_of(
        st.integers().filter(lambda n: not 0 <= n <= 65535).map(str),
        # anything but plain ASCII digits: "1_000", "+80", full-width digits, "0x50"...
        st.text(min_size=1, max_size=12).filter(
            lambda t: not (t.strip().isascii() and t.strip().isdigit())
        ),
        st.sampled_from(["1_000", "+80", "\uff18\uff10", "0x50", "80.0", "", " "]),
    )
)
def test_a_bad_port_is_a_usage_error(value: str) -> None:
    parser = build_parser()
    with pytest.raises(SystemExit) as info:
        parser.parse_args(["worker", "m:f", "--queue", "q", f"--metrics-port={value}"])
    assert info.value.code == 2
