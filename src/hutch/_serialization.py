"""Codecs: how a typed body becomes bytes and back. JSON via pydantic; raw bytes and text pass.

No pickle, ever: a body is data, never code. Decoding checks the content type against an
allow-list before touching the bytes.
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from functools import lru_cache
from typing import Any, Generic, TypeVar, cast

import pydantic
import pydantic_core
from pydantic import TypeAdapter

from hutch._exceptions import DecodeError, ValidationError

__all__ = ["Codec", "codec_for"]

T = TypeVar("T")

JSON = "application/json"
TEXT = "text/plain"
BINARY = "application/octet-stream"

#: Content types accepted as JSON. A missing content type is accepted too, since many
#: programs that do not use hutch never set one.
JSON_TYPES = frozenset({JSON, "text/json", "application/vnd.api+json"})
TEXT_TYPES = frozenset({TEXT, JSON, "text/json"})


def _media_type(content_type: str | None) -> str | None:
    if content_type is None:
        return None
    return content_type.split(";", 1)[0].strip().lower() or None


def _field_path(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(p) for p in loc) or "<body>"


class Codec(Generic[T]):
    """Encodes and decodes bodies of type ``T``.

    * ``bytes``: passed through untouched (``application/octet-stream``), any content type.
    * ``str``: UTF-8 text (``text/plain; charset=utf-8``).
    * anything else: JSON through a pydantic ``TypeAdapter`` (``application/json``);
      decoding accepts ``application/json`` or no content type, and validates.

    Args:
        model: The body type: a pydantic model, ``bytes``, ``str`` or any type a
            ``TypeAdapter`` accepts (``int``, ``list[Point]``, a ``TypedDict``...).

    Example:
        >>> Codec(int).decode(b"42", "application/json")
        42
    """

    __slots__ = ("_adapter", "_kind", "model")

    def __init__(self, model: type[T]) -> None:
        self.model = model
        if model is bytes:
            self._kind = "bytes"
            self._adapter: TypeAdapter[Any] | None = None
        elif model is str:
            self._kind = "str"
            self._adapter = None
        else:
            self._kind = "json"
            if isinstance(model, (str, bytes)) or model is None:
                raise TypeError(
                    f"model must be a type (a pydantic model, a standard type, bytes or str), "
                    f"got {type(model).__name__} {model!r:.60}"
                )
            try:
                self._adapter = TypeAdapter(model)
            except Exception as exc:  # pydantic raises many kinds for a non-type
                reason = (str(exc).splitlines() or [type(exc).__name__])[0]
                raise TypeError(
                    f"cannot use {model!r:.60} as a message body type: pydantic cannot "
                    f"validate it ({reason}); use a pydantic model, a standard type, bytes "
                    "or str"
                ) from None

    @property
    def content_type(self) -> str:
        """The content type this codec writes."""
        return {"bytes": BINARY, "str": f"{TEXT}; charset=utf-8"}.get(self._kind, JSON)

    def encode(self, value: T) -> tuple[bytes, str]:
        """Encode a body, refusing one that is not a ``T``.

        What "is a ``T``" means, so that every consumer decoding with the same model
        accepts what was sent:

        * an instance of exactly the model's class (``type(value) is model``) is encoded
          as it is: the fast path, no validation;
        * anything else must serialize to JSON that validates as ``T`` in pydantic's
          *strict* mode; what is sent is the validated value's JSON. So a ``dict`` with
          the right fields is accepted for a model (and sent with the model's defaults
          filled in), an ``IntEnum`` member or ``5`` for ``float`` is accepted, but
          ``"12abc"`` or ``"12"`` for ``int``, ``True`` for ``int``, a ``str`` for a
          model or a dict with a wrong field is refused;
        * ``bytes`` and ``str`` models take exactly ``bytes``-like values and ``str``.

        Args:
            value: The body.

        Returns:
            The bytes and their content type.

        Raises:
            ValidationError: The value is not a ``T`` and does not validate as one
                (names the field); nothing is sent.
        """
        if self._kind == "bytes":
            if not isinstance(value, (bytes, bytearray, memoryview)):
                raise ValidationError(
                    f"body must be bytes for this publisher, got {type(value).__name__}"
                )
            return bytes(value), BINARY
        if self._kind == "str":
            if not isinstance(value, str):
                raise ValidationError(
                    f"body must be str for this publisher, got {type(value).__name__}"
                )
            try:
                return value.encode(), f"{TEXT}; charset=utf-8"
            except UnicodeEncodeError as exc:
                raise ValidationError(
                    f"body cannot be encoded as UTF-8: {exc.reason} at position {exc.start}"
                ) from None
        adapter = cast("TypeAdapter[T]", self._adapter)
        if type(value) is self.model:
            try:
                data = adapter.dump_json(value)
            except pydantic_core.PydanticSerializationError as exc:
                raise ValidationError(f"cannot encode body as {self._name()}: {exc}") from None
            return finite_json(data, value), JSON
        try:
            raw = pydantic_core.to_json(value)
        except pydantic_core.PydanticSerializationError as exc:
            raise ValidationError(
                f"body of type {type(value).__name__} is not a {self._name()} and cannot be "
                f"converted to one ({exc})"
            ) from None
        try:
            validated = adapter.validate_json(raw, strict=True)
        except pydantic.ValidationError as exc:
            what = f"body of type {type(value).__name__}"
            raise _validation_error(exc, what, self._name()) from None
        return finite_json(adapter.dump_json(validated), validated), JSON

    def _name(self) -> str:
        return getattr(self.model, "__name__", repr(self.model))

    def decode(self, data: bytes, content_type: str | None = None) -> T:
        """Decode and validate a body.

        Args:
            data: The raw bytes.
            content_type: The message's content type property.

        Returns:
            The validated body.

        Raises:
            DecodeError: The content type is not accepted, or the bytes are not valid
                UTF-8 / JSON.
            ValidationError: The JSON does not match the model; names the field.
        """
        media = _media_type(content_type)
        if self._kind == "bytes":
            return cast("T", data)
        if self._kind == "str":
            if media is not None and media not in TEXT_TYPES and not media.startswith("text/"):
                raise DecodeError(f"content type {content_type!r} is not text")
            try:
                return cast("T", data.decode())
            except UnicodeDecodeError as exc:
                raise DecodeError(
                    f"body is not valid UTF-8: {exc.reason} at byte {exc.start}"
                ) from None
        if media is not None and media not in JSON_TYPES:
            raise DecodeError(f"content type {content_type!r} is not accepted: expected {JSON}")
        adapter = cast("TypeAdapter[T]", self._adapter)
        try:
            return adapter.validate_json(data)
        except pydantic.ValidationError as exc:
            errors = exc.errors(include_url=False, include_input=False)
            first = errors[0] if errors else None
            if first is not None and first["type"] in ("json_invalid", "json_type"):
                raise DecodeError(f"body is not valid JSON: {first['msg']}") from None
            raise _validation_error(exc, "body", self._name()) from None


def finite_json(data: bytes, value: object) -> bytes:
    """``data`` (the JSON of ``value``), unless ``value`` holds an infinite or NaN float.

    JSON writes those as ``null``; a consumer decoding with the same model would then
    refuse the message (``null`` is not a number), or take ``None`` for an optional field:
    refused before sending instead. Only JSON that contains ``null`` is looked into.

    Raises:
        ValidationError: ``value`` holds an infinite or NaN float.
    """
    if b"null" in data and _has_non_finite(pydantic_core.to_jsonable_python(value)):
        raise ValidationError(
            "body holds an infinite or NaN float, which JSON cannot carry (it would arrive "
            "as null): send a finite number, or a str or Decimal"
        )
    return data


def _has_non_finite(value: object) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_has_non_finite(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_has_non_finite(v) for v in value)
    return False


def _validation_error(exc: pydantic.ValidationError, what: str, name: str) -> ValidationError:
    """A hutch ValidationError naming the first failing field (input values left out)."""
    errors = exc.errors(include_url=False, include_input=False)
    if not errors:
        return ValidationError(f"{what} does not validate as {name}")
    first = errors[0]
    path = _field_path(tuple(first["loc"]))
    more = f" (and {len(errors) - 1} more errors)" if len(errors) > 1 else ""
    return ValidationError(
        f"{what} does not validate as {name}: field {path!r}: {first['msg']}{more}",
        field=path,
    )


@lru_cache(maxsize=256)
def _cached(model: Any) -> Codec[Any]:
    return Codec(model)


def codec_for(model: type[T] | Any) -> Codec[T]:
    """Return a (cached) codec for ``model``.

    Args:
        model: The body type.

    Returns:
        A codec for it.
    """
    try:
        return cast("Codec[T]", _cached(cast("Hashable", model)))
    except TypeError as exc:
        if "unhashable" in str(exc):
            return Codec(model)
        raise


def encode_any(value: object) -> tuple[bytes, str]:
    """Encode a body by its runtime type (publishers without a model).

    Args:
        value: bytes, str, a pydantic model or anything JSON-serializable by pydantic.

    Returns:
        The bytes and their content type.
    """
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value), BINARY
    if isinstance(value, str):
        return value.encode(), f"{TEXT}; charset=utf-8"
    if isinstance(value, pydantic.BaseModel):
        return value.model_dump_json().encode(), JSON
    codec: Codec[object] = codec_for(type(value))
    try:
        return codec.encode(value)
    except ValidationError as exc:
        raise TypeError(f"cannot encode the body as JSON: {exc}") from None


def decode_any(data: bytes, content_type: str | None) -> object:
    """Decode a body by its content type (subscribers without a model).

    JSON content types give the parsed JSON value, text types a str, anything else the
    raw bytes.

    Args:
        data: The raw bytes.
        content_type: The content type property.

    Returns:
        The decoded value.

    Raises:
        DecodeError: The body claims to be JSON or text but is not.
    """
    media = _media_type(content_type)
    if media in JSON_TYPES:
        try:
            # pydantic's parser, not json.loads: its nesting limit is fixed, so a hostile,
            # deeply nested body is refused however high the recursion limit was raised
            return cast(object, pydantic_core.from_json(data))
        except ValueError as exc:
            raise DecodeError(f"body is not valid JSON: {exc}") from None
    if media is not None and media.startswith("text/"):
        try:
            return data.decode()
        except UnicodeDecodeError as exc:
            raise DecodeError(f"body is not valid UTF-8: {exc.reason}") from None
    return data
