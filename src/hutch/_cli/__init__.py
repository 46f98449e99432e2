"""The ``hutch`` command line: publish, consume, call, declare, worker and serve.

Run ``hutch --help`` (or ``python -m hutch --help``) for the commands and
``hutch COMMAND --help`` for each one's options and examples. The broker URL comes from
``--url``, else the ``HUTCH_URL`` environment variable, else
``amqp://guest:guest@localhost:5672/``.

One module per command (``publish``, ``consume``, ``call``, ``declare``, ``worker``,
``serve``), each with a ``register`` that adds its options and a ``run`` that does it;
``common`` holds what they share (exit statuses, errors, connecting, loading
``module:attr`` specs), ``output`` reads bodies and prints messages, and ``app`` builds the
parser and turns exceptions into one ``hutch: error: ...`` line and an exit status.
"""

from __future__ import annotations

from hutch._cli.app import build_parser, main
from hutch._cli.common import UsageError
from hutch._cli.declare import _describe, load_topology
from hutch._cli.output import (
    BINARY_TYPE,
    JSON_TYPE,
    TEXT_TYPE,
    MessagePrinter,
    display_body,
    encode_body,
    parse_pairs,
    parse_properties,
    to_jsonable,
)

__all__ = [
    "BINARY_TYPE",
    "JSON_TYPE",
    "TEXT_TYPE",
    "MessagePrinter",
    "UsageError",
    "_describe",
    "build_parser",
    "display_body",
    "encode_body",
    "load_topology",
    "main",
    "parse_pairs",
    "parse_properties",
    "to_jsonable",
]
