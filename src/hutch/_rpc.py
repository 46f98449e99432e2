"""Remote procedure calls over RabbitMQ: the public face of hutch's RPC.

* :class:`~hutch.RpcServer` (``_rpc_server.py``) serves functions on a queue;
* :class:`~hutch.RpcClient` (``_rpc_client.py``) calls them, untyped or through typed stubs;
* ``_rpc_protocol.py`` holds the wire format both speak (``docs/rpc-wire-format.md``);
* :func:`load_server` finds a server by ``"package.module:attribute"`` for ``hutch serve``.
"""

from __future__ import annotations

from hutch._loading import load_instance
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
        TypeError: ``spec`` is not a string.
        ValueError: The spec is malformed, the module or attribute does not exist, or the
            attribute is not an RpcServer; the message says which and what to write.

    Example:
        >>> server = load_server("myapp.rpc:server")  # doctest: +SKIP
        >>> server.run()  # doctest: +SKIP
    """
    return load_instance(
        spec,
        RpcServer,
        what="server",
        expected="an RpcServer",
        example="myapp.rpc:server",
        from_cwd=True,
    )
