"""A typed stub called with a wrong argument type: mypy --strict must reject the last line.

Excluded from the project's own mypy run ([tool.mypy] exclude); checked by
tests/typing/test_stub_typing.py.
"""

from __future__ import annotations

from typing import Protocol

from pydantic import BaseModel

import hutch


class Point(BaseModel):
    x: int
    y: int


class Calculator(Protocol):
    def add_point(self, x: int, y: int) -> Point: ...


def call(client: hutch.RpcClient) -> Point:
    calc = client.stub(Calculator)
    return calc.add_point("1", 2)
