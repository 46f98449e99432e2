"""Remote procedure calls over RabbitMQ: the public face of hutch's RPC.

* :class:`~hutch.RpcServer` (``_rpc_server.py``) serves functions on a queue;
* :class:`~hutch.RpcClient` (``_rpc_client.py``) calls them, untyped or through typed stubs;
* ``_rpc_protocol.py`` holds the wire format both speak (``docs/rpc-wire-format.md``);
* :func:`load_server` finds a server by ``"package.module:attribute"`` for ``hutch serve``.
"""

from __future__ import annotations

import importlib
import os
import sys

from hutch._rpc_client import Proxy, RpcClient
from hutch._rpc_server import RpcServer

__all__ = ["Proxy", "RpcClient", "RpcServer", "load_server"]


def load_server(spec: str) -> RpcServer:
    """Import the :class:`~hutch.RpcServer` named by ``"package.module:attribute"``.

    The current directory is put on ``sys.path`` first (as ``python -m`` would), so a
    module next to where the command runs is found. The attribute may be dotted
    (``"app:services.rpc"``).

    Args:
        spec: ``"package.module:attribute"``.

    Returns:
        The server (not started).

    Raises:
        ValueError: The spec is malformed, the module or attribute does not exist, or the
            attribute is not an RpcServer; the message says which and what to write.

    Example:
        >>> server = load_server("myapp.rpc:server")  # doctest: +SKIP
        >>> server.run()  # doctest: +SKIP
    """
    if not isinstance(spec, str):
        raise ValueError(f"expected 'package.module:attribute', got {spec!r}")
    module_name, sep, attr = spec.partition(":")
    module_name, attr = module_name.strip(), attr.strip()
    if not sep or not module_name or not attr or ":" in attr:
        raise ValueError(
            f"expected 'package.module:attribute' (e.g. 'myapp.rpc:server'), got {spec!r}"
        )
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing and (module_name == missing or module_name.startswith(missing + ".")):
            raise ValueError(
                f"cannot import module {module_name!r} from {spec!r}: no module named "
                f"{missing!r} (run from the directory that contains it, or install it)"
            ) from None
        raise
    obj: object = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(
                f"module {module_name!r} has no attribute {attr!r} (from {spec!r})"
            ) from None
    if not isinstance(obj, RpcServer):
        raise ValueError(
            f"{spec!r} is a {type(obj).__name__}, not an RpcServer: point it at the "
            "hutch.RpcServer object your module creates"
        )
    return obj
