"""RPC without a broker: signatures, wire format, argument checks, load_server."""

from __future__ import annotations

import datetime as dt
import inspect
import json
import sys
import textwrap
from pathlib import Path
from typing import Protocol

import pytest
from pydantic import BaseModel

from hutch import ClosedError, Queue, RemoteError, RpcClient, RpcServer
from hutch._rpc import load_server
from hutch._rpc_protocol import (
    CallError,
    Signature,
    decode_error,
    decode_request,
    encode_error,
    encode_request,
    interface_methods,
)

URL = "amqp://guest:guest@127.0.0.1:1/"  # nothing listens: these tests must do no I/O


class Point(BaseModel):
    x: int
    y: int


class Shapes(Protocol):
    def add_point(self, x: int, y: int) -> Point: ...

    def area(self, points: list[Point]) -> float: ...


class ExtendedShapes(Shapes, Protocol):
    def name(self) -> str: ...

    @staticmethod
    def version() -> int: ...

    def _private(self) -> None: ...


class Opaque:
    """A class pydantic cannot validate."""


# ------------------------------------------------------------------ signatures
def move(p: Point, dx: int = 0, /, *rest: int, scale: float = 1.0, **tags: str) -> Point:
    return Point(x=int((p.x + dx + sum(rest)) * scale), y=p.y)


def test_bind_validates_and_converts_every_kind_of_parameter() -> None:
    sig = Signature(move, name="move")
    args, kwargs = sig.bind([{"x": 1, "y": 2}, 3, 4, 5], {"scale": "2", "colour": "red"})
    assert args == (Point(x=1, y=2), 3, 4, 5)
    assert kwargs == {"scale": 2.0, "colour": "red"}
    assert move(*args, **kwargs) == Point(x=26, y=2)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("args", "kwargs", "kind", "text"),
    [
        ([{"x": "a", "y": 2}], {}, "ValidationError", "'p.x'"),
        ([{"x": 1}], {}, "ValidationError", "'p.y'"),
        ([{"x": 1, "y": 2}, "many"], {}, "ValidationError", "'dx'"),
        ([{"x": 1, "y": 2}, 1, 2, "z"], {}, "ValidationError", "'rest.1'"),
        ([{"x": 1, "y": 2}], {"colour": 3}, "ValidationError", "'tags.colour'"),
        ([], {}, "TypeError", "missing a required argument: 'p'"),
        ([{"x": 1, "y": 2}], {"p": 1}, "ValidationError", "'tags.p'"),
    ],
)
def test_bind_errors_name_the_parameter(
    args: list[object], kwargs: dict[str, object], kind: str, text: str
) -> None:
    with pytest.raises(CallError) as info:
        Signature(move, name="move").bind(args, kwargs)
    assert info.value.type_name == kind
    assert text in info.value.message
    assert info.value.message.startswith("move(): ")


def test_method_signature_drops_self_and_unannotated_means_any() -> None:
    class Impl:
        def go(self, a, b: int = 1):  # type: ignore[no-untyped-def]
            return [a, b]

    sig = Signature(Impl.go, name="go", drop_first=True)
    assert sig.bind([{"any": "thing"}], {}) == ((), {"a": {"any": "thing"}})  # b: the default
    assert sig.encode_result([1, 2]) == (b"[1,2]", "application/json")


def test_result_encoding_and_client_side_decoding() -> None:
    def when() -> dt.datetime:
        return dt.datetime(2026, 1, 2, tzinfo=dt.timezone.utc)

    sig = Signature(when, name="when")
    body, content_type = sig.encode_result(when())
    assert content_type == "application/json"
    assert sig.decode_result(body, content_type) == when()
    with pytest.raises(CallError, match="cannot encode the result"):
        Signature(lambda: object(), name="odd").encode_result(object())


def test_an_infinite_or_nan_result_is_an_error_not_a_null() -> None:
    # JSON writes it as null: the caller would get None, or an invalid reply
    def ratio() -> float:
        return float("inf")

    def anything():  # type: ignore[no-untyped-def]
        return {"mean": float("nan")}

    for fn, name in ((ratio, "ratio"), (anything, "anything")):
        with pytest.raises(CallError, match="infinite or NaN") as info:
            Signature(fn, name=name).encode_result(fn())
        assert info.value.type_name == "ValidationError"
    nothing = Signature(lambda: None, name="nothing")
    assert nothing.encode_result(None) == (b"null", "application/json")


def test_raw_procedures_take_bytes_text_or_validated_values() -> None:
    def as_bytes(body: bytes) -> bytes:
        return body

    def as_text(body: str) -> str:
        return body

    def as_int(n: int) -> int:
        return n

    def untyped(body):  # type: ignore[no-untyped-def]
        return body

    assert Signature(as_bytes, name="b", raw=True).raw_argument(b"\xff") == b"\xff"
    assert Signature(as_text, name="t", raw=True).raw_argument("é".encode()) == "é"
    assert Signature(untyped, name="u", raw=True).raw_argument(b"30") == "30"
    assert Signature(as_int, name="i", raw=True).raw_argument(b"30") == 30
    with pytest.raises(CallError) as info:
        Signature(as_int, name="i", raw=True).raw_argument(b"thirty")
    assert info.value.type_name == "ValidationError"
    with pytest.raises(CallError, match="UTF-8"):
        Signature(as_text, name="t", raw=True).raw_argument(b"\xff")
    raw = Signature(as_int, name="i", raw=True)
    assert raw.encode_result(b"\x00") == (b"\x00", "application/octet-stream")
    assert raw.encode_result("ok") == (b"ok", "text/plain; charset=utf-8")
    assert raw.encode_result(832040) == (b"832040", "application/json")


def test_raw_procedure_needs_exactly_one_parameter() -> None:
    def two(a: bytes, b: bytes) -> bytes:
        return a + b

    def none() -> bytes:
        return b""

    def optional_extra(a: bytes, b: int = 1, *rest: int) -> bytes:
        return a

    for fn in (two, none):
        with pytest.raises(TypeError, match="exactly one positional parameter"):
            Signature(fn, name=fn.__name__, raw=True)
    Signature(optional_extra, name="ok", raw=True)


def test_unresolvable_or_unvalidatable_annotations_fail_at_registration() -> None:
    def later(x: NotDefinedAnywhere) -> int:  # type: ignore[name-defined]  # noqa: F821
        return 1

    def opaque(x: Opaque) -> int:
        return 1

    with pytest.raises(TypeError, match="cannot resolve the annotations of procedure 'later'"):
        Signature(later, name="later")
    with pytest.raises(TypeError, match="pydantic cannot validate it"):
        Signature(opaque, name="opaque")


# ------------------------------------------------------------------ wire format
def test_request_envelope_round_trip() -> None:
    body = encode_request((Point(x=1, y=2), [1]), {"when": dt.date(2026, 1, 2)})
    assert json.loads(body) == {"args": [{"x": 1, "y": 2}, [1]], "kwargs": {"when": "2026-01-02"}}
    assert decode_request(body, "application/json") == (
        [{"x": 1, "y": 2}, [1]],
        {"when": "2026-01-02"},
    )
    assert decode_request(b"", None) == ([], {})
    with pytest.raises(TypeError, match="cannot send the call's arguments as JSON"):
        encode_request((object(),), {})


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"{nope", "application/json"),
        (b"[1, 2]", None),
        (b'{"args": {}}', None),
        (b'{"kwargs": []}', None),
        (b"{}", "text/plain"),
    ],
)
def test_bad_request_envelopes(body: bytes, content_type: str | None) -> None:
    with pytest.raises(CallError) as info:
        decode_request(body, content_type)
    assert info.value.type_name == "BadRequest"


def test_error_bodies() -> None:
    error = decode_error(encode_error("KeyError", "'sku'"))
    assert isinstance(error, RemoteError)
    assert (error.type_name, error.remote_message, error.remote_traceback) == (
        "KeyError",
        "'sku'",
        None,
    )
    assert decode_error(encode_error("E", "m", "Traceback...")).remote_traceback == "Traceback..."
    garbled = decode_error(b"\xffnot json")
    assert garbled.type_name == "?"


# ------------------------------------------------------------------ interfaces
def test_interface_methods_include_bases_and_static_methods() -> None:
    methods = interface_methods(ExtendedShapes)
    assert sorted(methods) == ["add_point", "area", "name", "version"]
    assert methods["version"][1] is False
    assert methods["add_point"][1] is True
    with pytest.raises(TypeError, match="interface class"):
        interface_methods(len)  # type: ignore[arg-type]

    class Empty(Protocol):
        pass

    with pytest.raises(TypeError, match="no public methods"):
        interface_methods(Empty)


# ------------------------------------------------------------------ server arguments
@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"concurrency": 0}, "concurrency must be between 1 and 10000"),
        ({"concurrency": 4, "prefetch": 2}, "make it at least concurrency=4"),
        ({"prefetch": 0}, "prefetch must be between 1 and 65535"),
        ({"timeout": 0}, "timeout must be a finite number of seconds greater than 0"),
        ({"queue": ""}, "queue must name the request queue"),
        ({"queue": Queue("")}, "needs a named queue"),
    ],
)
def test_server_rejects_bad_options(options: dict[str, object], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        RpcServer(URL, **options)  # type: ignore[arg-type]


def test_server_registration_rules() -> None:
    server = RpcServer(URL, queue="q")
    assert server.queue.durable is False and server.queue.auto_delete is False
    assert server.prefetch == 8

    @server.procedure
    def add(x: int, y: int) -> int:
        return x + y

    @server.procedure(name="math.sub")
    def sub(x: int, y: int) -> int:
        return x - y

    assert add(1, 2) == 3 and sub(3, 1) == 2  # decorators return the function unchanged
    with pytest.raises(ValueError, match="already registered"):
        server.register(add)
    with pytest.raises(ValueError, match="give the procedure a name"):
        server.register(lambda: 1)
    with pytest.raises(TypeError, match="must be callable"):
        server.register(42)  # type: ignore[type-var]

    class ShapesImpl:
        def add_point(self, x: int, y: int) -> Point:
            return Point(x=x, y=y)

    with pytest.raises(TypeError, match=r"does not implement Shapes\.area"):
        server.implement(Shapes, ShapesImpl())
    assert server.procedures == ["add", "math.sub"]


def test_server_default_must_be_a_registered_raw_procedure() -> None:
    server = RpcServer(URL, default="add")
    server.register(lambda x: x, name="add")
    with pytest.raises(ValueError, match="must be a raw procedure"):
        server.start()
    other = RpcServer(URL, default="missing")
    other.register(lambda x: x, name="add")
    with pytest.raises(ValueError, match="names no registered procedure"):
        other.start()
    with pytest.raises(ValueError, match="register at least one procedure"):
        RpcServer(URL).start()


def test_server_close_without_start_is_idempotent() -> None:
    server = RpcServer(URL)
    server.close()
    server.close()
    with pytest.raises(ClosedError):
        server.start()


# ------------------------------------------------------------------ client arguments
def test_client_rejects_bad_options() -> None:
    with pytest.raises(ValueError, match="timeout must be a finite number of seconds greater"):
        RpcClient(URL, timeout=-1)
    with pytest.raises(ValueError, match="reply_queue must be"):
        RpcClient(URL, reply_queue="shared")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="queue must name"):
        RpcClient(URL, queue="")
    client = RpcClient(URL)
    with pytest.raises(TypeError, match="body must be bytes or str"):
        client.call_raw(30)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="needs an interface class"):
        client.stub(len)
    with pytest.raises(AttributeError):
        client.proxy._private  # noqa: B018
    client.close()
    with pytest.raises(ClosedError):
        client.call("add", 1, 2)


def test_stub_is_typed_like_the_interface() -> None:
    client = RpcClient(URL)
    stub = client.stub(Shapes)
    assert type(stub).__name__ == "ShapesStub"
    assert stub.add_point.__doc__ == "Call the remote procedure 'add_point'."
    assert str(inspect.signature(stub.add_point)) == "(x: 'int', y: 'int') -> 'Point'"
    with pytest.raises(TypeError, match="add_point\\(\\): missing a required argument: 'y'"):
        stub.add_point(1)  # type: ignore[call-arg]
    prefixed = client.stub(Shapes, prefix="geo.")
    with pytest.raises(TypeError, match=r"geo\.add_point\(\)"):
        prefixed.add_point(1)  # type: ignore[call-arg]


# ------------------------------------------------------------------ load_server
def test_load_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "rpc_app_for_tests.py").write_text(
        textwrap.dedent(
            f"""
            import hutch

            class Services:
                server = hutch.RpcServer({URL!r}, queue="app")
                not_a_server = 3

            server = Services.server
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        assert load_server("rpc_app_for_tests:server").queue.name == "app"
        assert load_server("rpc_app_for_tests:Services.server").queue.name == "app"
        for spec, message in [
            ("rpc_app_for_tests", "expected 'package.module:attribute'"),
            (":server", "expected 'package.module:attribute'"),
            ("rpc_app_for_tests:", "expected 'package.module:attribute'"),
            ("no_such_module_here:server", "cannot import module 'no_such_module_here'"),
            ("rpc_app_for_tests:missing", "has no attribute 'missing'"),
            ("rpc_app_for_tests:Services.not_a_server", "is a int, not an RpcServer"),
        ]:
            with pytest.raises(ValueError, match=message):
                load_server(spec)
    finally:
        sys.modules.pop("rpc_app_for_tests", None)
