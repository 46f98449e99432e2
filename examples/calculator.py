"""The interface shared by ``rpc_server.py`` and ``rpc_client.py``: one class, both sides.

The server registers an implementation of :class:`Calculator` with
``server.implement(Calculator, impl)``; the client gets a typed stand-in with
``client.stub(Calculator)``. mypy checks the client's calls against these annotations, and at
run time the server validates the arguments and the client validates the results with them.
"""

from __future__ import annotations

from typing import Protocol

from pydantic import BaseModel


class Point(BaseModel):
    """A point of the shape the server keeps."""

    x: int
    y: int
    n: int = 0  # its number in the shape, set by the server


class Calculator(Protocol):
    """What the calculator server offers."""

    def add_point(self, x: int, y: int) -> Point:
        """Add a point to the shape; return it with its number."""
        ...

    def centroid(self) -> Point | None:
        """The centre of the points added so far (None before the first)."""
        ...

    def divide(self, a: float, b: float) -> float:
        """``a / b``; dividing by zero raises on the server."""
        ...
