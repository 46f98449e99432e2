"""What every ``hutch`` command shares: exit statuses, errors, options, connecting, loading.

The commands live one per module beside this one (``publish.py``, ``consume.py``,
``call.py``, ``declare.py``, ``worker.py``, ``serve.py``); ``app.py`` builds the parser and
maps exceptions to exit statuses; ``output.py`` reads bodies and headers and prints messages.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from hutch._clock import join_thread
from hutch._connection import Connection
from hutch._exceptions import HutchError
from hutch._loading import failing_line
from hutch._settings import DEFAULT_URL, URL_ENV

if TYPE_CHECKING:
    from types import FrameType

__all__ = [
    "DEFAULT_URL",
    "EXIT_FAILURE",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "URL_ENV",
    "AddCommand",
    "CommandFailed",
    "Formatter",
    "UsageError",
    "connect",
    "examples",
    "load_spec",
    "one_line",
    "parse_json",
    "positive_float",
    "positive_int",
    "run_until_signalled",
    "running",
    "status",
    "stop_on_signals",
]

T = TypeVar("T")

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class UsageError(ValueError):
    """A bad argument, file or value given on the command line (exit status 2)."""


class CommandFailed(HutchError):
    """A command could not do what it was asked (exit status 1), e.g. a consume timeout."""


class AddCommand(Protocol):
    """Adds a command's subparser (given to each command module's ``register``)."""

    def __call__(
        self, name: str, help_text: str, description: str, examples: str
    ) -> argparse.ArgumentParser:
        """Add the subparser ``name`` with the shared options and an examples epilog.

        Args:
            name: The command's name.
            help_text: One line for ``hutch --help``.
            description: The paragraph at the top of ``hutch NAME --help``.
            examples: Example command lines, one per line.

        Returns:
            The subparser, to add the command's own arguments to.
        """


def one_line(exc: BaseException) -> str:
    """An exception's message on one line (its type name when it has none)."""
    text = str(exc).strip() or type(exc).__name__
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def status(text: str) -> None:
    """A progress line for humans, on stderr (stdout is kept for data)."""
    print(f"hutch: {text}", file=sys.stderr, flush=True)


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def positive_float(text: str) -> float:
    """An argparse type: a number of seconds above 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be more than 0 seconds")
    return value


def parse_json(text: str, what: str) -> Any:
    """Parse JSON given on the command line; a :class:`UsageError` naming ``what`` if bad."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(
            f"{what} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except RecursionError:
        raise UsageError(f"{what} is not valid JSON: nested too deeply") from None


def _abort(name: str) -> None:
    """A second signal: exit 130 at once (unacked messages go back to their queues)."""
    # os.write: print() is not safe inside a signal handler (re-entrant buffered I/O)
    os.write(
        2,
        f"hutch: {name} again: aborting; what was in hand is not acked and the broker "
        "redelivers it\nhutch: error: interrupted\n".encode(),
    )
    with contextlib.suppress(Exception):
        sys.stdout.flush()
    # not SystemExit: threads still running a handler would keep the process alive
    os._exit(EXIT_INTERRUPTED)


@contextlib.contextmanager
def stop_on_signals(stop: Callable[[], None], what: str) -> Iterator[threading.Event]:
    """On the first SIGINT/SIGTERM call ``stop()``; on the second exit 130 at once.

    ``stop`` must return quickly (it runs in the signal handler); see
    :func:`run_until_signalled` for a stop that blocks.
    """
    received = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def handler(signum: int, _frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if received.is_set():
            _abort(name)
        received.set()
        os.write(2, f"hutch: {name}: stopping {what} (send it again to abort)\n".encode())
        stop()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def run_until_signalled(run: Callable[[], None], stop: Callable[[], None], what: str) -> None:
    """Call ``run()`` until it returns; SIGINT/SIGTERM stop it, a second one exits 130.

    ``run`` (a blocking ``run()`` of a pool or server) runs on a helper thread, so that
    the signals are this function's whatever ``run`` does with them on the main thread:
    the first calls ``stop()`` (on another thread: it may block while the work in hand
    finishes), the second exits with status 130 at once. What ``run`` raises is raised
    here. Off the main thread, ``run()`` is simply called.
    """
    if threading.current_thread() is not threading.main_thread():
        run()
        return
    errors: list[BaseException] = []

    def target() -> None:
        try:
            run()
        except BaseException as exc:
            errors.append(exc)

    runner = threading.Thread(target=target, name="hutch-cli-run", daemon=True)

    def stop_in_background() -> None:
        threading.Thread(target=stop, name="hutch-cli-stop", daemon=True).start()

    with stop_on_signals(stop_in_background, what):
        runner.start()
        while runner.is_alive():
            join_thread(runner, 0.2)
    if errors:
        raise errors[0]


def connect(args: argparse.Namespace, command: str) -> Connection:
    """Open a connection to ``args.url`` named after the command (not yet entered).

    Without ``--url`` the library's rules apply: ``HUTCH_URL``, then the default; the
    other settings from ``HUTCH_*`` variables.

    Raises:
        UsageError: The URL or a ``HUTCH_*`` variable is malformed.
    """
    url: str | None = args.url
    try:
        conn = Connection(url, connection_name=f"hutch-cli {command}")
    except ValueError as exc:
        raise UsageError(
            f"invalid broker URL or setting (--url, {URL_ENV} or HUTCH_*): {one_line(exc)}"
        ) from None
    return conn.open(args.connect_timeout)


def load_spec(spec: str, loader: Callable[[str], T], what: str) -> T:
    """Load ``package.module:attribute`` with ``loader``, mapping its failures to usage errors.

    Args:
        spec: The spec given on the command line.
        loader: A :mod:`hutch._loading` function (with ``from_cwd=True``: a module next to
            where the command runs is found).
        what: What is loaded (``"handler"``, ``"server"``), for the message.

    Returns:
        What ``loader`` returns.

    Raises:
        UsageError: The spec is bad, the module cannot be imported or raised while being
            imported, or the object is of the wrong kind.
    """
    try:
        return loader(spec)
    except (ImportError, AttributeError, ValueError, TypeError) as exc:
        raise UsageError(f"cannot load {what} {spec!r}: {one_line(exc)}") from exc
    except HutchError:
        raise  # e.g. the module connects at import time and the broker is down
    except Exception as exc:
        # the module itself raised while being imported
        raise UsageError(
            f"importing {what} {spec!r} failed{failing_line(exc)}: {type(exc).__name__}: "
            f"{one_line(exc)}"
        ) from exc


def running(args: argparse.Namespace) -> None:
    """A long-running command is set up: from now on show hutch's warnings (reconnects)."""
    if args.verbose == 0:
        logging.getLogger("hutch").setLevel(logging.WARNING)


class Formatter(argparse.HelpFormatter):
    """Wraps prose paragraphs; keeps indented blocks (examples, schemas) as written."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=32)

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        paragraphs = []
        for paragraph in text.split("\n\n"):
            lines = paragraph.splitlines()
            if len(lines) > 1 and any(line[:1].isspace() for line in lines[1:]):
                paragraphs.append(textwrap.indent(paragraph, indent))
            else:
                paragraphs.append(
                    textwrap.fill(
                        " ".join(lines), width, initial_indent=indent, subsequent_indent=indent
                    )
                )
        return "\n\n".join(paragraphs)


def examples(text: str) -> str:
    """The ``examples:`` epilog of a help page, from an indented block of command lines."""
    return "examples:\n" + textwrap.indent(textwrap.dedent(text).strip("\n"), "  ")
