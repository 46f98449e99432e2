from __future__ import annotations

import json
import math
import pickle
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from hutch import Codec, DecodeError, ValidationError
from hutch._serialization import decode_any, encode_any


class Point(BaseModel):
    x: int
    y: int


class Line(BaseModel):
    start: Point
    end: Point


def test_model_roundtrip() -> None:
    codec: Codec[Line] = Codec(Line)
    data, ctype = codec.encode(Line(start=Point(x=1, y=2), end=Point(x=3, y=4)))
    assert ctype == "application/json"
    assert json.loads(data) == {"start": {"x": 1, "y": 2}, "end": {"x": 3, "y": 4}}
    assert codec.decode(data, ctype) == Line(start=Point(x=1, y=2), end=Point(x=3, y=4))


def test_validation_error_names_the_field() -> None:
    with pytest.raises(ValidationError) as info:
        Codec(Line).decode(b'{"start": {"x": 1, "y": 2}, "end": {"x": "three", "y": 4}}', None)
    assert info.value.field == "end.x"
    assert "end.x" in str(info.value)


def test_bad_json_is_a_decode_error() -> None:
    with pytest.raises(DecodeError, match="not valid JSON"):
        Codec(Point).decode(b"{not json", "application/json")


def test_content_type_allow_list() -> None:
    with pytest.raises(DecodeError, match="not accepted"):
        Codec(Point).decode(b'{"x":1,"y":2}', "application/x-python-pickle")
    assert Codec(Point).decode(b'{"x":1,"y":2}', "application/json; charset=utf-8") == Point(
        x=1, y=2
    )
    assert Codec(Point).decode(b'{"x":1,"y":2}', None) == Point(x=1, y=2)


def test_pickle_payload_is_never_unpickled() -> None:
    payload = pickle.dumps(Point(x=1, y=2))
    with pytest.raises(DecodeError):
        Codec(Point).decode(payload, "application/python-pickle")
    with pytest.raises(DecodeError):
        Codec(Point).decode(payload, None)
    assert decode_any(payload, "application/python-pickle") == payload


def test_bytes_and_str_pass_through() -> None:
    assert Codec(bytes).encode(b"\x00\xff") == (b"\x00\xff", "application/octet-stream")
    assert Codec(bytes).decode(b"\x00\xff", "whatever/type") == b"\x00\xff"
    data, ctype = Codec(str).encode("héllo")
    assert data == "héllo".encode()
    assert ctype.startswith("text/plain")
    assert Codec(str).decode(b"30", None) == "30"
    with pytest.raises(DecodeError, match="UTF-8"):
        Codec(str).decode(b"\xff\xfe", None)


def test_primitives_and_generics() -> None:
    assert Codec(int).decode(*Codec(int).encode(42)) == 42
    assert Codec(list[Point]).decode(b'[{"x":1,"y":2}]', None) == [Point(x=1, y=2)]
    with pytest.raises(ValidationError) as info:
        Codec(list[Point]).decode(b'[{"x":1}]', None)
    assert info.value.field == "0.y"


def test_wrong_body_type_on_encode() -> None:
    with pytest.raises(ValidationError, match="must be bytes"):
        Codec(bytes).encode("text")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="must be str"):
        Codec(str).encode(b"bytes")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="'x'"):
        Codec(Point).encode({"x": "one", "y": 2})  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="should be an object"):
        Codec(Point).encode("hello")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="valid integer"):
        Codec(int).encode("12abc")  # type: ignore[arg-type]
    # what validates strictly as the model is sent as the model's JSON
    assert Codec(Point).encode({"x": 1, "y": 2}) == (b'{"x":1,"y":2}', "application/json")  # type: ignore[arg-type]
    assert Codec(float).encode(5) == (b"5.0", "application/json")


def test_unsupported_model_type_fails_at_once() -> None:
    class NotAModel:
        pass

    with pytest.raises(TypeError, match="cannot use"):
        Codec(NotAModel)


def test_deeply_nested_json_is_rejected_not_crashing() -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    with pytest.raises(DecodeError):
        Codec(list[object]).decode(deep, None)
    with pytest.raises(DecodeError):
        decode_any(deep, "application/json")


def test_encode_any_by_runtime_type() -> None:
    assert encode_any(b"x") == (b"x", "application/octet-stream")
    assert encode_any("x")[1].startswith("text/plain")
    assert encode_any(Point(x=1, y=2)) == (b'{"x":1,"y":2}', "application/json")
    assert encode_any({"a": [1, 2]}) == (b'{"a":[1,2]}', "application/json")
    assert decode_any(b'{"a":1}', "application/json") == {"a": 1}
    assert decode_any(b"hi", "text/plain") == "hi"


_bodies = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**70), 2**70),
        st.floats(allow_nan=False),
        st.text(max_size=8),
        st.binary(max_size=8),
        st.builds(Point, x=st.integers(-5, 5), y=st.integers(-5, 5)),
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.dictionaries(st.sampled_from(["x", "y", "z"]), children, max_size=3),
    ),
    max_leaves=6,
)


@settings(max_examples=200, deadline=None)
@given(_bodies, st.sampled_from([Point, int, float, str, list[Point], dict[str, int], bool]))
def test_what_a_typed_codec_sends_its_consumers_accept(value: object, model: Any) -> None:
    codec: Codec[Any] = Codec(model)
    try:
        data, content_type = codec.encode(value)
    except ValidationError:
        return  # refused at once: nothing to send
    decoded = codec.decode(data, content_type)
    if type(value) is model:
        assert decoded == value


class _Reading(BaseModel):
    value: float
    previous: float | None = None


@pytest.mark.parametrize(
    ("model", "body"),
    [
        (float, math.inf),
        (float, math.nan),
        (_Reading, _Reading(value=-math.inf)),
        (_Reading, {"value": 1.0, "previous": math.nan}),
        (list[float], [1.0, -math.inf]),
        (float | None, math.inf),
        (dict[str, float], {"a": math.nan}),
    ],
)
def test_an_infinite_or_nan_float_is_refused_before_sending(model: Any, body: object) -> None:
    # JSON writes it as null, which a consumer with the same model refuses (or takes as None)
    with pytest.raises(ValidationError, match="infinite or NaN"):
        Codec(model).encode(body)


def test_a_null_that_is_none_is_still_sent() -> None:
    assert Codec(_Reading).encode(_Reading(value=1.0)) == (
        b'{"value":1.0,"previous":null}',
        "application/json",
    )
    optional: Codec[Any] = Codec(float | None)  # type: ignore[arg-type]
    assert optional.encode(None) == (b"null", "application/json")
