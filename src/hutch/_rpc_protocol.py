"""The RPC protocol: the wire format of requests and replies, and procedure signatures.

Shared by :class:`~hutch.RpcServer` and :class:`~hutch.RpcClient`; ``docs/rpc-wire-format.md``
describes the same format for programs that do not use hutch.

A request is published to the default exchange with the server's queue as routing key::

    headers        {"x-hutch-procedure": "<name>"}   (absent: the server's default procedure)
    content_type   application/json
    correlation_id unique per call
    reply_to       amq.rabbitmq.reply-to (direct reply-to) or the client's reply queue
    expiration     milliseconds left until the caller gives up
    body           {"args": [...], "kwargs": {...}}  (raw procedures: any bytes)

A reply goes to the default exchange with ``reply_to`` as routing key and the request's
correlation id::

    headers        {"x-hutch-status": "ok" | "error"}
    body           ok: the result, encoded by the procedure's return annotation
                   error: {"type": "...", "message": "...", "traceback": "..."}
"""

from __future__ import annotations

import inspect
import json
import typing
from collections.abc import Callable, Mapping
from typing import Any, cast

import pydantic
import pydantic_core
from pydantic import TypeAdapter
from typing_extensions import TypedDict

from hutch._exceptions import RemoteError, ValidationError
from hutch._serialization import BINARY, JSON, TEXT, _media_type, finite_json

__all__ = [
    "DIRECT_REPLY_TO",
    "PROCEDURE_HEADER",
    "STATUS_ERROR",
    "STATUS_HEADER",
    "STATUS_OK",
    "CallError",
    "Signature",
    "decode_error",
    "decode_request",
    "encode_error",
    "encode_request",
    "interface_methods",
]

#: Header naming the procedure a request calls.
PROCEDURE_HEADER = "x-hutch-procedure"
#: Header telling whether a reply carries a result or an error.
STATUS_HEADER = "x-hutch-status"
STATUS_OK = "ok"
STATUS_ERROR = "error"
#: RabbitMQ's pseudo-queue for direct reply-to.
DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"

TEXT_UTF8 = f"{TEXT}; charset=utf-8"

_ANY_ADAPTER: TypeAdapter[Any] = TypeAdapter(Any)


class CallError(Exception):
    """A request the server answers with an error reply (internal, never leaves the server).

    Attributes:
        type_name: The ``type`` sent in the error body.
        message: The ``message`` sent in the error body.
    """

    def __init__(self, type_name: str, message: str) -> None:
        super().__init__(message)
        self.type_name = type_name
        self.message = message


# ------------------------------------------------------------------------ requests
def encode_request(args: tuple[object, ...], kwargs: Mapping[str, object]) -> bytes:
    """Encode call arguments as the JSON request envelope.

    Args:
        args: Positional arguments (pydantic models, dataclasses and JSON values).
        kwargs: Keyword arguments.

    Returns:
        ``{"args": [...], "kwargs": {...}}`` as UTF-8 JSON.

    Raises:
        TypeError: An argument cannot be encoded as JSON.
    """
    try:
        return pydantic_core.to_json({"args": args, "kwargs": kwargs})
    except pydantic_core.PydanticSerializationError as exc:
        raise TypeError(
            f"cannot send the call's arguments as JSON ({exc}); pass JSON values, "
            "pydantic models or dataclasses"
        ) from None


def decode_request(body: bytes, content_type: str | None) -> tuple[list[object], dict[str, object]]:
    """Decode a request envelope.

    Args:
        body: The request body.
        content_type: Its content type (JSON or none).

    Returns:
        The positional and keyword arguments.

    Raises:
        CallError: ``BadRequest`` when the body is not a JSON envelope.
    """
    media = _media_type(content_type)
    if media is not None and media != JSON:
        raise CallError(
            "BadRequest", f"content type {content_type!r} is not accepted: expected {JSON}"
        )
    try:
        data = json.loads(body) if body else {}
    except (ValueError, RecursionError) as exc:
        raise CallError("BadRequest", f"body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise CallError("BadRequest", 'body must be a JSON object {"args": [...], "kwargs": {...}}')
    args = data.get("args", [])
    kwargs = data.get("kwargs", {})
    if not isinstance(args, list) or not isinstance(kwargs, dict):
        raise CallError("BadRequest", '"args" must be a JSON array and "kwargs" a JSON object')
    return args, kwargs


# ------------------------------------------------------------------------ errors
def encode_error(type_name: str, message: str, traceback: str | None = None) -> bytes:
    """Encode an error reply body.

    Args:
        type_name: The exception's type name.
        message: The exception's message.
        traceback: The formatted traceback, when the server opted in.

    Returns:
        ``{"type": ..., "message": ...[, "traceback": ...]}`` as UTF-8 JSON.
    """
    data: dict[str, str] = {"type": type_name, "message": message}
    if traceback is not None:
        data["traceback"] = traceback
    return json.dumps(data).encode()


def decode_error(body: bytes) -> RemoteError:
    """Turn an error reply body into a :class:`~hutch.RemoteError`.

    Args:
        body: The reply body.

    Returns:
        The error to raise (a malformed body still gives a RemoteError, of type ``"?"``).
    """
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        data = None
    if not isinstance(data, dict):
        return RemoteError("?", body.decode(errors="replace")[:2000])
    tb = data.get("traceback")
    return RemoteError(
        str(data.get("type", "?")),
        str(data.get("message", "")),
        remote_traceback=tb if isinstance(tb, str) else None,
    )


# ------------------------------------------------------------------------ signatures
def _error_path(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(p) for p in loc)


def _adapter(annotation: object, what: str) -> TypeAdapter[Any]:
    if annotation is Any:
        return _ANY_ADAPTER
    try:
        return TypeAdapter(cast(Any, annotation))
    except (pydantic.PydanticSchemaGenerationError, pydantic.PydanticUserError) as exc:
        raise TypeError(
            f"cannot use {annotation!r} for {what}: pydantic cannot validate it "
            f"({str(exc).splitlines()[0]}); use a pydantic model or a standard type"
        ) from None


class Signature:
    """How one procedure's arguments are checked and its result is encoded and decoded.

    Built once per procedure from ``inspect.signature`` and the resolved type hints:
    arguments are bound like a Python call (so a missing or unexpected argument is a
    ``TypeError``), then validated together by a pydantic ``TypeAdapter`` over a
    ``TypedDict`` of the parameters, so a failure names the parameter (and the field
    inside it). The result is encoded with an adapter of the return annotation.

    Args:
        fn: The function whose signature and annotations to use.
        name: The procedure name, for messages.
        drop_first: Drop the first parameter (``self`` of an interface's method).
        raw: A raw procedure: one parameter that receives the raw body.

    Raises:
        TypeError: Annotations pydantic cannot validate, or a raw procedure that does not
            take exactly one positional parameter.
    """

    __slots__ = (
        "_args_adapter",
        "_dump_result",
        "_names",
        "_param_adapter",
        "_raw_kind",
        "_required",
        "_result_adapter",
        "_validate_args",
        "name",
        "python_signature",
        "raw",
        "return_annotation",
    )

    def __init__(
        self, fn: Callable[..., object], *, name: str, drop_first: bool = False, raw: bool = False
    ) -> None:
        self.name = name
        self.raw = raw
        try:
            sig = inspect.signature(fn)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"cannot read the signature of procedure {name!r}: {exc}") from None
        try:
            hints = typing.get_type_hints(fn, include_extras=True)
        except Exception as exc:
            raise TypeError(
                f"cannot resolve the annotations of procedure {name!r} ({type(exc).__name__}: "
                f"{exc}); define the types it names at module level"
            ) from None
        params = list(sig.parameters.values())
        if drop_first:
            if not params or params[0].kind not in (
                inspect.Parameter.POSITIONAL_ONLY,
                inspect.Parameter.POSITIONAL_OR_KEYWORD,
            ):
                raise TypeError(f"method {name!r} must take self as its first parameter")
            params = params[1:]
        self.python_signature = sig.replace(parameters=params)
        ret = (
            hints.get("return", Any)
            if sig.return_annotation is not inspect.Signature.empty
            else Any
        )
        self.return_annotation: object = ret
        self._result_adapter = _adapter(ret, f"the result of procedure {name!r}")
        # pydantic's own serializer and validator, called without TypeAdapter's wrappers
        # (every call goes through them: a tenth of the server's Python per request)
        self._dump_result: Callable[..., bytes] = self._result_adapter.serializer.to_json
        self._validate_args: Callable[[object], Any] | None = None
        self._args_adapter: TypeAdapter[Any] | None = None
        self._param_adapter: TypeAdapter[Any] | None = None
        self._raw_kind = ""
        self._names: tuple[str, ...] | None = None
        self._required: frozenset[str] = frozenset()
        if raw:
            positional = [
                p
                for p in params
                if p.kind
                in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
            ]
            required = [
                p
                for p in params[1:]
                if p.default is inspect.Parameter.empty
                and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
            ]
            if len(positional) < 1 or required:
                raise TypeError(
                    f"raw procedure {name!r} must take exactly one positional parameter, "
                    "the request body (annotate it bytes, str, int, a model...)"
                )
            ann = hints.get(positional[0].name, Any)
            if ann is bytes:
                self._raw_kind = "bytes"
            elif ann is str or ann is Any:
                self._raw_kind = "str"
            else:
                self._raw_kind = "json"
                self._param_adapter = _adapter(ann, f"parameter {positional[0].name!r} of {name!r}")
            return
        simple = all(p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD for p in params)
        self._names = tuple(p.name for p in params) if simple else None
        self._required = frozenset(p.name for p in params if p.default is inspect.Parameter.empty)
        fields: dict[str, object] = {}
        for p in params:
            ann = hints.get(p.name, Any)
            if p.kind is inspect.Parameter.VAR_POSITIONAL:
                ann = tuple[ann, ...]  # type: ignore[valid-type]
            elif p.kind is inspect.Parameter.VAR_KEYWORD:
                ann = dict[str, ann]  # type: ignore[valid-type]
            fields[p.name] = ann
        if fields:
            td = TypedDict(f"{name}_arguments", fields, total=False)  # type: ignore[misc]
            self._args_adapter = _adapter(td, f"the parameters of procedure {name!r}")
            self._validate_args = self._args_adapter.validator.validate_python

    # ------------------------------------------------------------------ server side
    def bind(
        self, args: list[object], kwargs: dict[str, object]
    ) -> tuple[tuple[object, ...], dict[str, object]]:
        """Bind and validate call arguments.

        Args:
            args: Positional arguments as decoded from JSON.
            kwargs: Keyword arguments as decoded from JSON.

        Returns:
            The validated positional and keyword arguments to call the function with.

        Raises:
            CallError: ``TypeError`` when the arguments do not fit the signature,
                ``ValidationError`` (naming the parameter and field) when one does not
                validate.
        """
        names = self._names
        if names is not None and len(args) <= len(names):
            # fast path for the usual signature (no *args, **kwargs, positional-only or
            # keyword-only parameters): every argument can be passed by name
            arguments = dict(zip(names, args, strict=False))
            if (
                not arguments.keys() & kwargs.keys()
                and kwargs.keys() <= set(names)
                and self._required <= arguments.keys() | kwargs.keys()
            ):
                arguments.update(kwargs)
                validate = self._validate_args
                if validate is not None:
                    arguments = self._validated(validate, arguments)
                return (), arguments
        try:
            bound = self.python_signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise CallError("TypeError", f"{self.name}(): {exc}") from None
        validate = self._validate_args
        if validate is not None:
            for key, value in self._validated(validate, bound.arguments).items():
                bound.arguments[key] = value
        return bound.args, bound.kwargs

    def _validated(
        self, validate: Callable[[object], Any], arguments: Mapping[str, object]
    ) -> dict[str, object]:
        """``arguments`` validated by ``validate`` (the parameters' annotations)."""
        try:
            validated: dict[str, object] = validate(arguments)
        except pydantic.ValidationError as exc:
            raise CallError("ValidationError", _describe(exc, self.name)) from None
        return validated

    def raw_argument(self, body: bytes) -> object:
        """Convert a raw request body for a raw procedure.

        Args:
            body: The request body.

        Returns:
            The bytes, the text, or the value validated from the body's JSON/text.

        Raises:
            CallError: ``BadRequest`` for text that is not UTF-8, ``ValidationError``
                for a body that does not validate against the parameter's annotation.
        """
        if self._raw_kind == "bytes":
            return body
        if self._raw_kind == "str":
            try:
                return body.decode()
            except UnicodeDecodeError as exc:
                raise CallError("BadRequest", f"body is not valid UTF-8: {exc.reason}") from None
        assert self._param_adapter is not None
        try:
            return self._param_adapter.validate_json(body)
        except pydantic.ValidationError as exc:
            raise CallError("ValidationError", _describe(exc, self.name, prefix="body")) from None

    def encode_result(self, value: object) -> tuple[bytes, str]:
        """Encode a procedure's return value.

        Typed procedures always reply JSON. Raw procedures reply ``bytes`` untouched,
        ``str`` as UTF-8 text and anything else (numbers, models) as JSON.

        Args:
            value: The return value.

        Returns:
            The body and its content type.

        A value that is not exactly the declared class must serialize to JSON that
        validates as the return annotation in pydantic's strict mode (as a publisher's
        body must); what is sent is the validated value's JSON.

        Raises:
            CallError: ``TypeError`` when the value cannot be encoded, ``ValidationError``
                when it does not validate as the return annotation.
        """
        if self.raw:
            if isinstance(value, (bytes, bytearray, memoryview)):
                return bytes(value), BINARY
            if isinstance(value, str):
                try:
                    return value.encode(), TEXT_UTF8
                except UnicodeEncodeError as exc:
                    raise CallError(
                        "TypeError", f"the result of {self.name!r} is not UTF-8: {exc.reason}"
                    ) from None
        ret = self.return_annotation
        adapter = self._result_adapter
        try:
            if ret is Any or type(value) is ret:
                # nothing to check (Any), or exactly the declared class: the fast path
                return self._finite(self._dump_result(value, warnings=False), value), JSON
            raw = pydantic_core.to_json(value)
        except (pydantic_core.PydanticSerializationError, ValueError, TypeError) as exc:
            raise CallError(
                "TypeError",
                f"cannot encode the result of {self.name!r} ({type(value).__name__}) "
                f"as JSON: {exc}",
            ) from None
        # typed means typed on the way out: a result that is not what the procedure
        # declares is refused here, not sent for the caller to trip over
        try:
            validated = adapter.validate_json(raw, strict=True)
        except pydantic.ValidationError as exc:
            raise CallError(
                "ValidationError",
                _describe(exc, self.name, prefix=f"result ({type(value).__name__})"),
            ) from None
        return self._finite(adapter.dump_json(validated, warnings=False), validated), JSON

    def _finite(self, data: bytes, value: object) -> bytes:
        """``data``, unless JSON turned an infinite or NaN float of ``value`` into null."""
        try:
            return finite_json(data, value)
        except ValidationError as exc:
            raise CallError("ValidationError", f"the result of {self.name!r}: {exc}") from None

    # ------------------------------------------------------------------ client side
    def check_call(self, args: tuple[object, ...], kwargs: Mapping[str, object]) -> None:
        """Check that a call fits the signature before it is sent.

        Args:
            args: Positional arguments.
            kwargs: Keyword arguments.

        The arguments must serialize to JSON that validates as the parameters'
        annotations in pydantic's strict mode (the rule :class:`~hutch.Publisher` applies
        to bodies), so a call the server would refuse is never sent.

        Raises:
            TypeError: Missing or unexpected arguments, as for a local call.
            ValidationError: An argument does not validate as its annotation (names the
                parameter and the field).
        """
        try:
            bound = self.python_signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"{self.name}(): {exc}") from None
        if self._args_adapter is None:
            return
        try:
            raw = pydantic_core.to_json(bound.arguments)
        except pydantic_core.PydanticSerializationError as exc:
            raise ValidationError(
                f"{self.name}(): the arguments cannot be sent as JSON ({exc}); pass JSON "
                "values, pydantic models or dataclasses"
            ) from None
        try:
            self._args_adapter.validate_json(raw, strict=True)
        except pydantic.ValidationError as exc:
            errors = exc.errors(include_url=False, include_input=False)
            path = _error_path(tuple(errors[0]["loc"])) if errors else None
            raise ValidationError(_describe(exc, self.name), field=path or None) from None

    def decode_result(self, body: bytes, content_type: str | None) -> object:
        """Validate a reply body into the return annotation.

        Args:
            body: The reply body.
            content_type: Its content type.

        Returns:
            The validated result.

        Raises:
            pydantic.ValidationError: The body does not match the annotation (the client
                turns it into :class:`~hutch.ValidationError`).
        """
        media = _media_type(content_type)
        if media is not None and media != JSON:
            if media.startswith("text/"):
                return self._result_adapter.validate_python(body.decode())
            return self._result_adapter.validate_python(body)
        return self._result_adapter.validate_json(body)


def _describe(exc: pydantic.ValidationError, name: str, *, prefix: str = "argument") -> str:
    errors = exc.errors(include_url=False, include_input=False)
    if not errors:
        return f"the arguments of {name!r} do not validate"
    first = errors[0]
    path = _error_path(tuple(first["loc"]))
    more = f" (and {len(errors) - 1} more errors)" if len(errors) > 1 else ""
    where = f"{prefix} {path!r}" if path else prefix
    return f"{name}(): {where}: {first['msg']}{more}"


# ------------------------------------------------------------------------ interfaces
_SKIP_BASES = {object, typing.Generic}


def interface_methods(interface: type) -> dict[str, tuple[Callable[..., object], bool]]:
    """The public methods of an interface class (a ``typing.Protocol`` or any class).

    Args:
        interface: The class.

    Returns:
        ``{name: (function, takes_self)}`` for each public method, base classes included
        (``staticmethod`` functions do not take ``self``).

    Raises:
        TypeError: ``interface`` is not a class, or has no public methods.
    """
    if not isinstance(interface, type):
        raise TypeError(
            f"expected an interface class (a typing.Protocol or a class with annotated "
            f"methods), got {interface!r}"
        )
    found: dict[str, tuple[Callable[..., object], bool]] = {}
    for klass in reversed(interface.__mro__):
        if klass in _SKIP_BASES or klass is typing.Protocol or klass.__module__ == "typing":
            continue
        for attr, member in vars(klass).items():
            if attr.startswith("_"):
                continue
            if isinstance(member, staticmethod):
                found[attr] = (cast("Callable[..., object]", member.__func__), False)
            elif inspect.isfunction(member):
                found[attr] = (member, True)
            else:
                found.pop(attr, None)
    if not found:
        raise TypeError(f"interface {interface.__name__} has no public methods to call")
    return found
