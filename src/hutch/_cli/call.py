"""``hutch call``: call a remote procedure with JSON arguments and print its result."""

from __future__ import annotations

import argparse
import inspect
import json
from typing import Any

from hutch._cli.common import (
    EXIT_OK,
    AddCommand,
    CommandFailed,
    UsageError,
    connect,
    one_line,
    parse_json,
    positive_float,
)
from hutch._cli.output import dumps
from hutch._exceptions import RemoteError, RpcTimeout

__all__ = ["register", "run"]


def _argument(index: int, text: str) -> Any:
    """One ARG as JSON; a bare word gets the hint to quote it as a JSON string."""
    try:
        return parse_json(text, f"argument {index} ({text!r})")
    except UsageError as exc:
        quoted = json.dumps(text, ensure_ascii=False)
        raise UsageError(
            f"{exc}; each ARG is JSON: for the string {text!r} write '{quoted}'"
        ) from None


def run(args: argparse.Namespace) -> int:
    """Make the call and print its result as JSON; the exit status."""
    positional = [_argument(i, a) for i, a in enumerate(args.args, 1)]
    kwargs: dict[str, Any] = {}
    if args.kwargs is not None:
        parsed = parse_json(args.kwargs, "--kwargs")
        if not isinstance(parsed, dict):
            raise UsageError("--kwargs must be a JSON object, e.g. '{\"x\": 1}'")
        kwargs = parsed
    from hutch._rpc import RpcClient

    with (
        connect(args, "call") as conn,
        RpcClient(conn, queue=args.queue, timeout=args.timeout) as client,
    ):
        try:
            result = client.call(args.procedure, *positional, **kwargs)
        except RpcTimeout as exc:
            raise CommandFailed(
                f"{one_line(exc)} (waited {args.timeout:g} s; a slow procedure needs a "
                "longer --timeout)"
            ) from exc
        except RemoteError as exc:
            raise CommandFailed(
                f"call to {args.procedure} failed: {exc.type_name}: {exc.remote_message}"
            ) from exc
    print(dumps(result), flush=True)
    return EXIT_OK


def _client_default(name: str) -> Any:
    """The default of one of :class:`~hutch.RpcClient`'s options (one source of truth)."""
    from hutch._rpc import RpcClient

    return inspect.signature(RpcClient.__init__).parameters[name].default


def register(command: AddCommand) -> None:
    """Add ``hutch call`` and its options to the parser."""
    r = command(
        "call",
        "call a remote procedure and print its JSON result",
        "Call a procedure served by 'hutch serve' (or any hutch RpcServer) with JSON "
        "arguments and print the result as JSON. Each ARG is parsed as JSON: quote strings "
        "as '\"text\"'.",
        """
        hutch call add_point 1 2
        hutch call add_point --kwargs '{"x": 1, "y": 2}'
        hutch call greet '"Ada"' --timeout 5
        """,
    )
    r.add_argument("procedure", metavar="PROCEDURE", help="procedure name")
    r.add_argument("args", metavar="ARG", nargs="*", help="a JSON positional argument")
    r.add_argument("--kwargs", metavar="JSON", help="keyword arguments as a JSON object")
    r.add_argument(
        "--queue",
        default=_client_default("queue"),
        metavar="NAME",
        help="the server's request queue (default: %(default)s, as RpcClient)",
    )
    r.add_argument(
        "--timeout",
        type=positive_float,
        default=_client_default("timeout"),
        metavar="S",
        help="seconds to wait for the reply (default: %(default)g, as RpcClient)",
    )
    r.set_defaults(run=run)
