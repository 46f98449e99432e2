"""Running the ``hutch`` command line inside the test's own process."""

from __future__ import annotations

import logging

__all__ = ["run_cli"]

#: The loggers whose handlers and levels the command line sets (see ``hutch._cli.app``).
_LOGGERS = ("", "hutch", "pika")


def run_cli(*argv: str) -> int:
    """Run ``hutch ARGV...`` in this process; return its exit status.

    The same command line as the ``hutch`` script, but in the calling process, so a
    ``memory://`` URL (given with ``--url`` or in ``HUTCH_URL``) reaches this process's
    memory broker: a test can, for instance, ``hutch declare`` its topology file on the
    broker its code then uses, in milliseconds. The command prints to this process's
    stdout and stderr (pytest's ``capsys`` reads them). Logging is left as it was: the
    handler and levels the command sets for itself are undone when it returns. A usage
    error or ``--help`` returns its status (2, 0) rather than exiting the process.

    Args:
        argv: The arguments after ``hutch``, one string each.

    Returns:
        The exit status: 0 success, 1 failure, 2 usage error, 130 interrupted.

    Raises:
        TypeError: An argument is not a string.

    Example:
        >>> run_cli("declare", "topology.toml", "--url", "memory://t")  # doctest: +SKIP
        0
    """
    for arg in argv:
        if not isinstance(arg, str):
            raise TypeError(
                f"run_cli takes the arguments as strings, one each, not {arg!r} "
                f"({type(arg).__name__}): e.g. run_cli('consume', 'jobs', '--count', '2')"
            )
    from hutch._cli import main

    loggers = [logging.getLogger(name) for name in _LOGGERS]
    saved = [(lg, lg.level, list(lg.handlers)) for lg in loggers]
    try:
        return main(list(argv))
    except SystemExit as exc:  # argparse's usage errors and --help exit; return instead
        return exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    finally:
        for lg, level, handlers in saved:
            lg.setLevel(level)
            for handler in [h for h in lg.handlers if h not in handlers]:
                lg.removeHandler(handler)
