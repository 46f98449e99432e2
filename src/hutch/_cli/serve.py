"""``hutch serve``: load an RpcServer from a module and serve its procedures."""

from __future__ import annotations

import argparse
import os

from hutch._cli.common import (
    EXIT_OK,
    URL_ENV,
    AddCommand,
    load_spec,
    run_until_signalled,
    running,
    status,
)
from hutch._cli.metrics import add_metrics_options, serving

__all__ = ["register", "run"]


def run(args: argparse.Namespace) -> int:
    """Serve calls until SIGTERM or Ctrl-C, then print the counts; the exit status."""
    from hutch._rpc import load_server

    if args.url_given:
        # the server's module opens its own connection; this is how it learns --url
        os.environ[URL_ENV] = args.url
    server = load_spec(args.server, load_server, "server")
    with serving(args) as probe:
        server.start()
        conn = server._conn  # the server's connection, shared or its own

        probe.watch(
            lambda: {"connection_open": conn.is_connected, "consumers_active": server.is_running}
        )
        running(args)
        status(
            f"serving {', '.join(server.procedures)} on queue {server.queue.name!r}; "
            "Ctrl-C or SIGTERM stops it gracefully"
        )
        run_until_signalled(server.run, server.stop, "the server after the calls in hand")
    status(f"server stopped: {server.handled} calls answered, {server.failed} with an error")
    return EXIT_OK


def register(command: AddCommand) -> None:
    """Add ``hutch serve`` and its options to the parser."""
    s = command(
        "serve",
        "run an RPC server",
        "Load SERVER (package.module:attribute, an RpcServer) and serve calls until "
        "SIGTERM or Ctrl-C, which finishes the calls in hand first; a second Ctrl-C aborts "
        "(exit 130). -v logs a line per call.",
        """
        hutch serve myapp.rpc:server
        hutch serve myapp.rpc:server --url amqp://user:secret@rabbit/prod
        hutch serve myapp.rpc:server --metrics-port 9102
        """,
    )
    s.add_argument("server", metavar="SERVER", help="package.module:attribute")
    add_metrics_options(s)
    s.set_defaults(run=run)
