"""The worker-process protocol of ``WorkerPool(processes=True)``.

Each worker thread of a pool drives one child process (``spawn`` start method) through a
duplex pipe. The child imports the handler by its qualified name; nothing but bytes and
JSON crosses the pipe, and no body is ever pickled:

=========  ==========================================================================
child      sends ``{"ready": <pid>}`` once the handler is imported
parent     sends a task as two frames: the delivery's meta as JSON
           (:func:`delivery_meta`: properties, headers as JSON values, exchange, routing
           key, redelivered, tags; ``"trace"``: the process span's W3C trace
           context, when OpenTelemetry is in use), then the raw body bytes
child      answers one :class:`~hutch._worker_pool.outcome.Outcome` as JSON
parent     sends ``{"stop": true}`` and an empty body frame to end it
=========  ==========================================================================

A child that dies mid-task comes back as a ``CRASH`` outcome; the parent replaces it.
Only the parent speaks AMQP for the pool; the child attaches the task's trace context
around the handler, so a message the handler publishes (or an RPC call it makes) on a
connection of its own continues the trace of the message it handles.
"""

from __future__ import annotations

import datetime as _dt
import decimal
import json
import logging
import math
import multiprocessing
import multiprocessing.connection
import os
import signal
from collections.abc import Callable, Mapping
from multiprocessing.reduction import ForkingPickler
from typing import TYPE_CHECKING, Any

from hutch._amqp import Delivery
from hutch._exceptions import MessageError, WorkerError
from hutch._message import Message, Properties
from hutch._serialization import Codec, codec_for, decode_any
from hutch._subscriber import wants_message
from hutch._telemetry import attached_trace_context, current_trace_context
from hutch._worker_pool.outcome import Outcome, OutcomeKind, call_handler

if TYPE_CHECKING:
    from multiprocessing.context import SpawnProcess

__all__ = [
    "Child",
    "check_picklable_by_name",
    "child_main",
    "delivery_meta",
    "describe_exit",
    "jsonable",
    "message_from_meta",
]

log = logging.getLogger("hutch")


def check_picklable_by_name(what: str, obj: object) -> None:
    """Check that a worker process can import ``obj`` by its qualified name.

    Args:
        what: What ``obj`` is, for the message.
        obj: The handler, model or exception types.

    Raises:
        ValueError: ``obj`` cannot be referenced by name (a lambda, a nested function...).
    """
    try:
        ForkingPickler.dumps(obj)
    except Exception as exc:
        raise ValueError(
            f"processes=True runs the handler in worker processes, which import the {what} by "
            f"its qualified name; {obj!r} cannot be referenced that way ({exc}). Use a "
            "module-level function (or pass 'package.module:function')"
        ) from None


def jsonable(value: Any) -> Any:
    """Header values as JSON types (bytes and odd types become strings)."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, (_dt.datetime, _dt.date)):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return str(value)


def delivery_meta(delivery: Delivery) -> dict[str, Any]:
    props = delivery.properties.as_dict()
    ts = props.get("timestamp")
    if isinstance(ts, _dt.datetime):
        props["timestamp"] = ts.isoformat()
    if "headers" in props:
        props["headers"] = jsonable(props["headers"])
    return {
        "properties": props,
        "exchange": delivery.exchange,
        "routing_key": delivery.routing_key,
        "redelivered": delivery.redelivered,
        "delivery_tag": delivery.delivery_tag,
        "consumer_tag": delivery.consumer_tag,
    }


def message_from_meta(codec: Codec[Any] | None, meta: dict[str, Any], body: bytes) -> Message[Any]:
    props: dict[str, Any] = dict(meta.get("properties") or {})
    ts = props.get("timestamp")
    if isinstance(ts, str):
        try:
            props["timestamp"] = _dt.datetime.fromisoformat(ts)
        except ValueError:
            props.pop("timestamp")
    try:
        properties = Properties(**props)
    except (TypeError, ValueError):
        properties = Properties(
            content_type=props.get("content_type"), headers=props.get("headers")
        )
    content_type = properties.content_type
    value = decode_any(body, content_type) if codec is None else codec.decode(body, content_type)
    return Message(
        body=value,
        raw_body=body,
        properties=properties,
        exchange=str(meta.get("exchange", "")),
        routing_key=str(meta.get("routing_key", "")),
        redelivered=bool(meta.get("redelivered", False)),
        delivery_tag=int(meta.get("delivery_tag", 0)),
        consumer_tag=str(meta.get("consumer_tag", "")),
    )


def child_main(
    conn: multiprocessing.connection.Connection,
    handler: Callable[..., object],
    model: Any,
    retry_on: tuple[type[BaseException], ...],
) -> None:
    """Entry point of a worker process: run tasks from the pipe until told to stop."""
    # The parent decides when to stop and finishes the tasks in hand first; a terminal's
    # Ctrl-C or a service manager's SIGTERM to the whole process group must not kill us.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    codec: Codec[Any] | None = codec_for(model) if model is not None else None
    call_with_message = wants_message(handler)
    conn.send_bytes(json.dumps({"ready": os.getpid()}).encode())
    while True:
        try:
            meta = json.loads(conn.recv_bytes())
            body = conn.recv_bytes()
        except (EOFError, OSError):
            return  # the parent went away
        if meta.get("stop"):
            return
        try:
            message = message_from_meta(codec, meta, body)
        except MessageError as exc:
            outcome = Outcome(OutcomeKind.INVALID, type(exc).__name__, exc.reason)
        else:
            with attached_trace_context(meta.get("trace")):
                outcome = call_handler(handler, call_with_message, message, retry_on)
        try:
            conn.send_bytes(outcome.to_json())
        except (EOFError, OSError):
            return


def describe_exit(exitcode: int | None) -> str:
    if exitcode is None:
        return "is unresponsive"
    if exitcode < 0:
        try:
            return f"was killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"was killed by signal {-exitcode}"
    return f"exited with code {exitcode}"


class Child:
    """One worker process and the pipe to it (used by one worker thread only)."""

    def __init__(
        self,
        name: str,
        handler: Callable[..., object],
        model: Any,
        retry_on: tuple[type[BaseException], ...],
    ) -> None:
        self.name = name
        self._args = (handler, model, retry_on)
        self._ctx = multiprocessing.get_context("spawn")
        self.process: SpawnProcess | None = None
        self.conn: multiprocessing.connection.Connection | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def spawn(self) -> None:
        parent, child = self._ctx.Pipe(duplex=True)
        process = self._ctx.Process(
            target=child_main, args=(child, *self._args), name=self.name, daemon=True
        )
        process.start()
        child.close()
        self.process, self.conn = process, parent

    def wait_ready(self, timeout: float) -> None:
        assert self.process is not None
        assert self.conn is not None
        ready = multiprocessing.connection.wait([self.conn, self.process.sentinel], timeout)
        if self.conn in ready:
            try:
                json.loads(self.conn.recv_bytes())
                return
            except (EOFError, OSError):
                pass
        self.process.join(1.0)
        exitcode = self.process.exitcode
        if not ready:
            self.kill()
        raise WorkerError(
            f"worker process {self.process.pid} {describe_exit(exitcode)} before it was ready "
            f"(within {timeout} s): can it import the handler? see its traceback above",
            pid=self.process.pid,
            exitcode=exitcode,
        )

    def run(self, meta: dict[str, Any], body: bytes) -> Outcome:
        assert self.process is not None
        assert self.conn is not None
        trace_context = current_trace_context()  # the process span's, when it is on
        if trace_context is not None:
            meta = {**meta, "trace": trace_context}
        try:
            self.conn.send_bytes(json.dumps(meta).encode())
            self.conn.send_bytes(body)
        except (EOFError, OSError):
            return self._crashed()
        while True:
            ready = multiprocessing.connection.wait([self.conn, self.process.sentinel])
            if self.conn in ready:
                try:
                    return Outcome.from_json(self.conn.recv_bytes())
                except (EOFError, OSError):
                    return self._crashed()
            if self.process.sentinel in ready:
                return self._crashed()

    def _crashed(self) -> Outcome:
        assert self.process is not None
        self.process.join(2.0)
        text = f"worker process {self.process.pid} {describe_exit(self.process.exitcode)} mid-task"
        return Outcome(OutcomeKind.CRASH, "WorkerError", text, retryable=True)

    def stop(self, timeout: float) -> None:
        process, conn = self.process, self.conn
        if process is None or conn is None:
            return
        try:
            conn.send_bytes(b'{"stop": true}')
            conn.send_bytes(b"")
        except (EOFError, OSError):
            pass
        process.join(max(0.0, timeout))
        if process.is_alive():
            log.warning(
                "hutch: worker process %s did not stop in time; terminating it", process.pid
            )
            self.kill()
        conn.close()

    def kill(self) -> None:
        process = self.process
        if process is None:
            return
        if process.is_alive():
            process.terminate()
            process.join(2.0)
        if process.is_alive():
            process.kill()
            process.join(2.0)
