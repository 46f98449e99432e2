"""Correct use of typed RPC stubs: mypy --strict must accept this file."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from pydantic import BaseModel
from typing_extensions import assert_type

import hutch


class Point(BaseModel):
    x: int
    y: int


class Calculator(Protocol):
    def add_point(self, x: int, y: int) -> Point: ...

    def total(self, values: list[float]) -> float: ...


class CalculatorImpl:
    def add_point(self, x: int, y: int) -> Point:
        return Point(x=x, y=y)

    def total(self, values: list[float]) -> float:
        return sum(values)


def serve(server: hutch.RpcServer) -> None:
    impl: Calculator = CalculatorImpl()  # checked against the protocol by mypy
    server.implement(Calculator, impl)

    @server.procedure
    def add(x: int, y: int) -> int:
        return x + y

    @server.procedure(name="math.sub")
    def sub(x: int, y: int) -> int:
        return x - y

    checked: Callable[[int, int], int] = add  # the decorators keep the signature
    assert checked is add
    assert_type(add(1, 2), int)
    assert_type(sub(1, 2), int)


def call(client: hutch.RpcClient) -> Point:
    calc = client.stub(Calculator)
    assert_type(calc, Calculator)
    assert_type(calc.total([1.0, 2.5]), float)
    untyped = client.call("add_point", 1, 2)
    assert_type(untyped, object)
    assert_type(client.call_raw("30"), bytes)
    return calc.add_point(1, 2)
