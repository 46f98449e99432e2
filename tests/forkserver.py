"""Run short Python programs as forks of a process that imported hutch already.

:func:`run` does what ``subprocess.run(argv, capture_output=True, text=True, ...)`` does for
``python -c CODE [ARGS]`` or ``python SCRIPT [ARGS]``, in a fork of a *zygote*: a
single-threaded ``python`` started once per session (on the first run, or earlier by
:func:`prestart`, which does not wait for it) that imports
:data:`PRELOAD`, then only forks. A run costs a fork, not a start and ``import hutch``, and is
a process of its own: fresh ``__main__``, ``os.environ`` exactly ``env``, cwd, ``sys.argv`` and
``sys.path[0]`` as Python sets them, stdin on /dev/null, its own stdout and stderr, Python's
exit status (non-daemon threads joined and ``atexit`` run first). What Python reads only at
start (``PYTHONHASHSEED``, ``PYTHON*`` options, stdio encoding) is the zygote's, and from
Python 3.13 a traceback through ``-c`` code shows no source lines under its frames.
``HUTCH_TEST_NO_FORKSERVER=1``, or no ``fork``, makes :func:`run` a plain ``subprocess.run``.

A request (JSON) goes with three descriptors over a ``SOCK_SEQPACKET`` pair: the zygote's end of
a new socket pair, stdout's file and stderr's. The zygote forks, reaps its children on SIGCHLD
and writes each exit code on its socket; a byte on it, or its closing, kills the child.
"""

from __future__ import annotations

import atexit
import builtins
import contextlib
import gc
import importlib
import json
import locale
import os
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import types
from collections.abc import Mapping, Sequence
from importlib.machinery import BuiltinImporter, SourceFileLoader
from pathlib import Path
from typing import IO, Any, NoReturn

#: Modules the zygote imports once, for every run to find in ``sys.modules``.
PRELOAD = ("hutch",)
#: Imported too where installed: what a run would import on its first connection
#: (OpenTelemetry, for hutch's telemetry: ~10 ms) and the command line and its output.
PRELOAD_OPTIONAL = ("hutch._telemetry._otel", "hutch._cli.app", "rich.console", "rich.table")
ROOT = Path(__file__).resolve().parents[1]
_BOOT = "import sys; sys.path.insert(0, sys.argv[1]); import tests.forkserver as f; "
_BOOT += "del sys.path[0]; f._serve(int(sys.argv[2]))"


def parse(argv: Sequence[str]) -> tuple[str | None, str | None, list[str]]:
    """``(code, script, args)`` of ``[sys.executable, "-c", CODE | SCRIPT, *args]``."""
    if len(argv) >= 3 and argv[0] == sys.executable and argv[1] == "-c":
        return argv[2], None, list(argv[3:])
    if len(argv) >= 2 and argv[0] == sys.executable and not argv[1].startswith("-"):
        return None, argv[1], list(argv[2:])
    raise ValueError(f"not [sys.executable, '-c' CODE | SCRIPT, *args]: {argv}")


def run(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: str | os.PathLike[str] | None = None,
    timeout: float,
) -> subprocess.CompletedProcess[str]:
    """``subprocess.run(argv, capture_output=True, text=True, ...)`` as a fork of the zygote.

    A run past ``timeout`` seconds is killed (SIGKILL) and raises ``subprocess.TimeoutExpired``.
    """
    return start(argv, env=env, cwd=cwd, timeout=timeout).result()


def start(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: str | os.PathLike[str] | None = None,
    timeout: float,
    nice: int = 0,
) -> Run:
    """:func:`run` without waiting: the program runs while the caller goes on.

    ``timeout`` counts from now; ``nice`` is added to the program's niceness (a background
    program then yields the CPU to the tests). No thread waits for the program: :meth:`Run.done` looks
    without blocking, :meth:`Run.result` waits (and kills the program past its timeout).
    """
    argv = list(argv)
    parse(argv)
    out, err = tempfile.TemporaryFile(), tempfile.TemporaryFile()  # noqa: SIM115 - Run closes them
    try:
        server = None if os.environ.get("HUTCH_TEST_NO_FORKSERVER") == "1" else _server()
        if server is None:
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env, cwd=cwd,
                preexec_fn=(lambda: os.nice(nice)) if nice else None,
            )  # fmt: skip
            return Run(argv, timeout, out, err, proc=proc)
        request = {
            "argv": argv, "env": dict(env), "cwd": os.path.abspath(cwd or os.getcwd()), "nice": nice
        }  # fmt: skip
        return Run(argv, timeout, out, err, sock=server.start(request, out.fileno(), err.fileno()))
    except BaseException:
        out.close()
        err.close()
        raise


class Run:
    """A program :func:`start` started: a fork of the zygote, or a plain subprocess."""

    def __init__(
        self,
        argv: list[str],
        timeout: float,
        out: IO[bytes],
        err: IO[bytes],
        *,
        sock: socket.socket | None = None,
        proc: subprocess.Popen[bytes] | None = None,
    ) -> None:
        self.argv, self.timeout = argv, timeout
        self.deadline = time.monotonic() + timeout
        self._out, self._err = out, err
        self._sock, self._proc = sock, proc
        self._status = b""  # what the zygote wrote so far: the exit code and a newline
        self._result: subprocess.CompletedProcess[str] | None = None
        self._killed = False

    def fileno(self) -> int | None:
        """A descriptor that becomes readable when the program ends (None: poll instead)."""
        return None if self._sock is None or self._result is not None else self._sock.fileno()

    def done(self) -> bool:
        """Whether the program has ended (never blocks)."""
        if self._result is None and self._sock is not None:
            self._sock.setblocking(False)
            try:
                self._read_status()
            except BlockingIOError:
                pass
        return self._result is not None or self._exit_code() is not None

    def result(self) -> subprocess.CompletedProcess[str]:
        """Wait for the program's end: ``subprocess.run``'s result.

        Raises:
            subprocess.TimeoutExpired: It ran past its timeout and was killed.
        """
        if self._result is None:
            if self._sock is not None:
                self._sock.settimeout(
                    max(0.001, self.deadline - time.monotonic())
                )  # 0: non-blocking
                try:
                    self._read_status()
                except TimeoutError:
                    self._killed = True
                    self._sock.settimeout(30)
                    self._sock.sendall(b"k")
                    self._read_status()
            else:
                assert self._proc is not None
                try:
                    self._proc.wait(max(0.0, self.deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    self._killed = True
                    self._proc.kill()
                    self._proc.wait()
                self._finish(self._proc.returncode)
        assert self._result is not None
        if self._killed:
            raise subprocess.TimeoutExpired(
                self.argv, self.timeout, output=self._result.stdout, stderr=self._result.stderr
            )
        return self._result

    def kill(self) -> None:
        """End the program now (SIGKILL) if it still runs, and take its result."""
        if self._result is None:
            self.deadline = time.monotonic()  # result() kills it at once
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.result()

    def _exit_code(self) -> int | None:
        if self._proc is not None and self._result is None and self._proc.poll() is not None:
            self._finish(self._proc.returncode)
        return None if self._result is None else self._result.returncode

    def _read_status(self) -> None:
        assert self._sock is not None
        while not self._status.endswith(b"\n"):
            chunk = self._sock.recv(64)
            if not chunk:
                raise RuntimeError(f"the fork server gave no exit status:\n{_server_errors()}")
            self._status += chunk
        self._finish(int(self._status))

    def _finish(self, status: int) -> None:
        if self._sock is not None:
            self._sock.close()
        with self._out, self._err:
            stdout, stderr = _text(self._out), _text(self._err)
        self._result = subprocess.CompletedProcess(self.argv, status, stdout, stderr)


def _server_errors() -> str:
    return _servers[0].errors() if _servers and _servers[0] is not None else ""


def _text(file: IO[bytes]) -> str:
    """What the file holds, decoded as ``subprocess.run(text=True)`` decodes output."""
    file.seek(0)
    text = file.read().decode(locale.getpreferredencoding(False))
    return text.replace("\r\n", "\n").replace("\r", "\n")


class _Server:
    """The test process's side of one zygote."""

    def __init__(self) -> None:
        self.sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 - the zygote's stderr, for errors
        self.lock = threading.Lock()
        with theirs:
            argv = [sys.executable, "-c", _BOOT, str(ROOT), str(theirs.fileno())]
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self.log,
                pass_fds=[theirs.fileno()],
            )  # fmt: skip
        self.ready = False

    def wait_ready(self) -> None:
        """Wait for the zygote to say it has imported :data:`PRELOAD` (once; with the lock)."""
        if self.ready:
            return
        self.sock.settimeout(60)
        try:
            if self.sock.recv(16) != b"ready":
                raise OSError(f"the fork server did not start:\n{self.errors()}")
        except BaseException:
            self.close()
            raise
        self.sock.settimeout(None)
        self.ready = True

    def errors(self) -> str:
        """What the zygote wrote on stderr so far."""
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def start(self, request: object, out: int, err: int) -> socket.socket:
        """Fork a child for ``request``: the socket its exit code comes on.

        A byte written on it, or its closing, kills the child.
        """
        mine, theirs = socket.socketpair()
        try:
            with theirs, self.lock:
                data = json.dumps(request).encode()
                socket.send_fds(self.sock, [data], [theirs.fileno(), out, err])
        except BaseException:
            mine.close()
            raise
        return mine

    def close(self) -> None:
        """End the zygote (it kills the children still running) and wait for it."""
        self.sock.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


_servers: list[_Server | None] = []  # [] before the first run; [None] if none could start
_servers_lock = threading.Lock()


def prestart() -> None:
    """Start the zygote now without waiting for it: it imports while the tests run."""
    if os.environ.get("HUTCH_TEST_NO_FORKSERVER") != "1":
        _server(wait=False)


def _server(*, wait: bool = True) -> _Server | None:
    """The session's zygote, started on first use; None where there can be none."""
    with _servers_lock:
        if not _servers:
            server = None
            try:
                if hasattr(os, "fork") and hasattr(socket, "send_fds"):
                    server = _Server()
                    atexit.register(server.close)
            except OSError as exc:
                print(f"tests.forkserver: running without it: {exc}", file=sys.stderr)
            _servers.append(server)
        server = _servers[0]
        if wait and server is not None and not server.ready:
            try:
                server.wait_ready()
            except OSError as exc:
                print(f"tests.forkserver: running without it: {exc}", file=sys.stderr)
                _servers[0] = server = None
        return server


def _serve(fd: int) -> None:
    """The zygote: import PRELOAD, then fork a child per request until the socket closes."""
    for name in PRELOAD:
        importlib.import_module(name)
    for name in PRELOAD_OPTIONAL:
        try:
            importlib.import_module(name)
        except ImportError:
            pass  # not installed: a run imports what it needs itself
    if threading.active_count() != 1:
        sys.exit(f"importing {PRELOAD + PRELOAD_OPTIONAL} started threads: forking is unsafe")
    control = socket.socket(fileno=fd)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
    sel = selectors.DefaultSelector()
    sel.register(control, selectors.EVENT_READ)
    sel.register(wake_r, selectors.EVENT_READ)
    children: dict[int, socket.socket] = {}  # pid: the socket to write its exit code on
    # what the zygote imported is never collected: out of the collector's sight, a
    # child's collections do not write to (and copy) every page of it
    gc.freeze()
    control.sendall(b"ready")
    while True:
        for key, _ in sel.select(timeout=1):
            if key.fileobj is control:
                request, fds, _, _ = socket.recv_fds(control, 1 << 20, 3)
                if not request:  # the test process is gone
                    for pid in children:
                        os.kill(pid, signal.SIGKILL)
                    return
                conn = socket.socket(fileno=fds[0])
                if (pid := os.fork()) == 0:
                    _child(request, fds, [control, conn, *children.values()], sel, (wake_r, wake_w))
                os.close(fds[1])
                os.close(fds[2])
                children[pid] = conn
                sel.register(conn, selectors.EVENT_READ, pid)
            elif key.fileobj == wake_r:
                os.read(wake_r, 4096)  # SIGCHLD: reaped below
            else:  # a kill request, or the test process no longer waits
                sel.unregister(key.fileobj)
                os.kill(key.data, signal.SIGKILL)
        while children and (ended := os.waitpid(-1, os.WNOHANG))[0]:
            conn = children.pop(ended[0])
            if conn in sel.get_map():
                sel.unregister(conn)
            try:
                conn.sendall(f"{os.waitstatus_to_exitcode(ended[1])}\n".encode())
            except OSError:
                pass  # the test thread gave up already
            conn.close()


def _child(
    request: bytes,
    fds: list[int],
    socks: list[socket.socket],
    sel: selectors.BaseSelector,
    wake: tuple[int, int],
) -> NoReturn:
    """A forked child: drop the zygote's parts, run the request's program, end as Python would.

    ``fds``: the request's socket (in ``socks``), and the files for stdout and stderr.
    """
    status, interrupted = 1, False
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        sel.close()
        for sock in socks:
            sock.close()
        for fd in wake:
            os.close(fd)
        for fd, target in ((os.open(os.devnull, os.O_RDONLY), 0), (fds[1], 1), (fds[2], 2)):
            os.dup2(fd, target)
            os.close(fd)
        for name in [n for n in sys.modules if n == "tests" or n.startswith("tests.")]:
            del sys.modules[name]  # this helper's package: no module of the program
        args: dict[str, Any] = json.loads(request)
        if args.get("nice"):
            os.nice(args["nice"])
        status, interrupted = _main(args["argv"], args["env"], args["cwd"])
        threading._shutdown()  # type: ignore[attr-defined]  # join non-daemon threads
        atexit._run_exitfuncs()
        for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
            if stream is not None and not stream.closed:
                stream.flush()
    except BaseException:  # our own failure, or flushing stdout failing (then Python's too)
        status = 120
    finally:
        if interrupted:  # Python ends by SIGINT then: the parent sees -2
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGINT)
        os._exit(status)


def _main(argv: list[str], env: dict[str, str], cwd: str) -> tuple[int, bool]:
    """Run the program as ``__main__``: its exit status, and whether Ctrl-C ended it."""
    code, script, args = parse(argv)
    main = types.ModuleType("__main__")
    main.__dict__.update(__builtins__=builtins, __loader__=BuiltinImporter)
    sys.modules["__main__"] = main
    sys.orig_argv = list(argv)
    sys.argv = ["-c", *args] if script is None else [script, *args]
    sys.path[0] = ""
    os.environ.clear()
    os.environ.update(env)
    importlib.invalidate_caches()
    try:
        os.chdir(cwd)
        if script is None:
            compiled = compile(code or "", "<string>", "exec")
        else:
            path = os.path.abspath(script)
            if not os.path.isfile(path):
                msg = f"can't open file {path!r}: [Errno 2] No such file or directory"
                print(f"{sys.executable}: {msg}", file=sys.stderr)
                return 2, False
            sys.path[0] = os.path.dirname(os.path.realpath(path))
            loader = SourceFileLoader("__main__", path)
            main.__dict__.update(__file__=path, __cached__=None, __loader__=loader)
            compiled = compile(Path(path).read_bytes(), path, "exec")
        exec(compiled, main.__dict__)
    except SystemExit as exc:  # None: 0; a number: itself; anything else: printed, 1
        if exc.code is None or isinstance(exc.code, int):
            return (exc.code or 0) & 0xFF, False
        print(exc.code, file=sys.stderr)
        return 1, False
    except BaseException as exc:
        tb = exc.__traceback__
        while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
            tb = tb.tb_next  # the traceback starts in the program, as Python's does
        sys.excepthook(type(exc), exc.with_traceback(tb), tb)
        return 1, isinstance(exc, KeyboardInterrupt)
    return 0, False
