"""RpcClient: call remote procedures like local functions, typed through interface stubs."""

from __future__ import annotations

import functools
import heapq
import inspect
import itertools
import logging
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import pydantic

from hutch._amqp import ChannelApi, Delivery, OutgoingMessage, basic_properties
from hutch._checks import check_shortstr, check_str, check_timeout
from hutch._connection import Connection, resolve_connection
from hutch._exceptions import (
    ClosedError,
    ConnectionLost,
    HutchError,
    InvalidReply,
    MessageTooLarge,
    NoServer,
    RpcError,
    RpcTimeout,
    ValidationError,
)
from hutch._lifecycle import Lifecycle, LifecycleState
from hutch._message import Properties
from hutch._resource import Resource
from hutch._rpc_protocol import (
    DIRECT_REPLY_TO,
    PROCEDURE_HEADER,
    STATUS_ERROR,
    STATUS_HEADER,
    Signature,
    decode_error,
    encode_request,
    interface_methods,
)
from hutch._serialization import JSON, decode_any
from hutch._telemetry import Scope
from hutch._topology import Queue

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["RpcClient"]

log = logging.getLogger("hutch")

I = TypeVar("I")  # noqa: E741 - the conventional name for an interface type variable

_TRANSIENT = 1
# longest a calling thread reads replies itself before leaving it to the I/O thread
_PUMP_LIMIT = 0.5

#: How a reply is turned into the call's result (I/O thread).
_Decoder = Callable[[Delivery], object]


def _decode_untyped(delivery: Delivery) -> object:
    return decode_any(delivery.body, delivery.content_type or JSON)


def _decode_raw(delivery: Delivery) -> object:
    return delivery.body


# entries of settled calls the deadline heap may hold beyond twice the calls in flight
_HEAP_SLACK = 64


class _Call:
    __slots__ = ("blocking", "cid", "deadline", "decode", "future", "name")

    def __init__(self, cid: str, name: str, decode: _Decoder, deadline: float) -> None:
        self.cid = cid
        self.name = name
        self.decode = decode
        self.deadline = deadline
        self.future: Future[Any] = Future()
        self.blocking = 0  # ident of the thread that waits for it in call(), or 0


class RpcClient(Resource):
    """Calls procedures served by an :class:`~hutch.RpcServer` (or any AMQP RPC server).

    Replies come back over RabbitMQ's direct reply-to (``amq.rabbitmq.reply-to``, no
    reply queue at all) by default, or over an exclusive server-named reply queue with
    ``reply_queue="exclusive"``. The client's one channel consumes replies before it
    publishes any request, and matches each reply to its call by correlation id; replies
    nobody waits for any more (late ones) are dropped and logged at DEBUG.

    Requests are published with ``mandatory`` set, so a call to a queue that does not
    exist fails at once with :class:`~hutch.NoServer`, and with ``expiration`` set to the
    time left, so no server runs a call its caller has given up on.

    Threads: any number of threads may call at once; their calls are pipelined over the
    one channel. :meth:`call` blocks the calling thread until the reply or the deadline;
    :meth:`call_async` returns a future at once. Futures complete on the connection's I/O
    thread, so callbacks added to them must return quickly. Replies are not acked
    (direct reply-to has no acks) or acked on arrival (exclusive reply queue).

    Args:
        connection: A :class:`~hutch.Connection` (shared) or a URL (owned); None (the
            default) is ``HUTCH_URL``'s broker.
        queue: The server's request queue.
        timeout: Default seconds to wait for a reply.
        reply_queue: ``"direct"`` (direct reply-to) or ``"exclusive"`` (a reply queue of
            the client's own, for brokers or proxies without direct reply-to).

    Raises:
        TypeError: A wrong argument type.
        ValueError: An invalid argument value.

    Example:
        >>> with RpcClient(conn, queue="calc") as client:  # doctest: +SKIP
        ...     print(client.call("add", 1, 2))
        ...     calc = client.stub(Calculator)
        ...     print(calc.add_point(1, 2))  # typed as Point
        3
        x=1 y=2
    """

    def __init__(
        self,
        connection: Connection | str | None = None,
        *,
        queue: str = "rpc_queue",
        timeout: float = 10.0,
        reply_queue: Literal["direct", "exclusive"] = "direct",
    ) -> None:
        if not isinstance(queue, str):
            raise TypeError(f"queue must be a str, got {type(queue).__name__}")
        if not queue:
            raise ValueError("queue must name the server's request queue, e.g. 'rpc_queue'")
        check_shortstr("queue", queue)
        timeout = check_timeout("timeout", timeout)
        if reply_queue not in ("direct", "exclusive"):
            raise ValueError("reply_queue must be 'direct' (direct reply-to) or 'exclusive'")
        self._conn, self._owns_conn = resolve_connection(connection)
        self.queue = queue
        self.timeout = float(timeout)
        self.reply_queue = reply_queue
        self._reply_queue: Queue | None = None
        self._channel: ChannelApi | None = None
        self._tag: str | None = None
        self._lock = threading.Lock()
        self._life = LifecycleState("the RPC client")
        # correlation id -> call; dict operations are atomic, so threads share it unlocked
        self._pending: dict[str, _Call] = {}
        self._prefix = uuid.uuid4().hex[:12]
        self._ids = itertools.count(1)
        self._timer: threading.Thread | None = None
        self._timer_cv = threading.Condition()
        self._timer_changes = 0  # bumped when the timer must look again (a jump may not)
        self._deadlines: list[tuple[float, str]] = []
        self._stubs: dict[tuple[type, str], dict[str, Signature]] = {}
        #: Replies that arrived for calls nobody waits for any more (late or unknown).
        self.dropped_replies = 0

    def __repr__(self) -> str:
        return f"<RpcClient queue={self.queue!r} pending={len(self._pending)} conn={self._conn!r}>"

    # ----------------------------------------------------------------- lifecycle
    def open(self) -> Self:
        """Open the channel and start consuming replies (done by the first call otherwise).

        Returns:
            This client.

        Raises:
            ClosedError: The client was closed.
        """
        self._ensure_channel()
        return self

    def _ensure_channel(self) -> ChannelApi:
        ch = self._channel
        if ch is not None:
            return ch
        with self._lock:
            self._life.check_usable()
            if self._channel is None:
                if self._owns_conn and not self._conn.is_open:
                    self._conn.open()
                ch = self._conn.channel()
                try:
                    ch.on_return = self._on_return
                    if self.reply_queue == "direct":
                        self._tag = ch.consume(DIRECT_REPLY_TO, self._on_reply)
                    else:
                        self._reply_queue = Queue("", exclusive=True, auto_delete=True)
                        ch.declare([self._reply_queue])
                        self._tag = ch.consume(self._reply_queue, self._on_reply)
                except BaseException:
                    ch.close()
                    raise
                self._conn.add_listener(self._on_connection_event)
                self._channel = ch
                self._life.move(Lifecycle.OPEN)
            return self._channel

    def close(self) -> None:
        """Fail calls still waiting with ClosedError, close the channel. Idempotent."""
        with self._lock:
            if not self._life.move(Lifecycle.CLOSING):
                return
        try:
            self._fail_all(ClosedError("the RPC client was closed while the call was waiting"))
            with self._timer_cv:
                self._timer_cv.notify_all()
            if self._channel is not None:
                self._conn.remove_listener(self._on_connection_event)
                self._channel.close()
            if self._owns_conn:
                self._conn.close()
        finally:
            self._life.move(Lifecycle.CLOSED)

    # ----------------------------------------------------------------- calling
    def call(
        self, procedure: str, /, *args: object, timeout: float | None = None, **kwargs: object
    ) -> object:
        """Call a procedure and wait for its result.

        Args:
            procedure: The procedure name.
            *args: Positional arguments (JSON values, pydantic models, dataclasses).
            timeout: Seconds to wait for the reply (default: the client's). A procedure
                parameter named ``timeout`` must be passed positionally, or through a stub.
            **kwargs: Keyword arguments.

        Returns:
            The result decoded from JSON (dicts, lists, numbers...); use :meth:`stub` for
            results validated into their annotated types.

        Raises:
            NoServer: No queue of that name exists (raised at once).
            RpcTimeout: No reply within ``timeout``.
            RemoteError: The procedure raised, or the server refused the call (unknown
                procedure, arguments that do not validate).
            InvalidReply: The reply (body, properties or headers) cannot be decoded.
            ConnectionLost: The connection was lost while waiting.
            RpcError: Called on the connection's I/O thread (e.g. in a future's callback).
            TypeError: An argument cannot be encoded as JSON.
        """
        self._check_may_block()
        if self._conn.telemetry.enabled:
            return self._traced(
                procedure,
                lambda span: self._start(
                    procedure, args, kwargs, timeout, _decode_untyped, direct=True, span=span
                ),
            )
        return self._wait(
            self._start(procedure, args, kwargs, timeout, _decode_untyped, direct=True)
        )

    def call_async(
        self, procedure: str, /, *args: object, timeout: float | None = None, **kwargs: object
    ) -> Future[object]:
        """Start a call and return at once; the future gives the result or the error.

        The future fails with :class:`~hutch.RpcTimeout` at the deadline if no reply came.

        Args:
            procedure: The procedure name.
            *args: Positional arguments.
            timeout: Seconds until the call times out (default: the client's).
            **kwargs: Keyword arguments.

        Returns:
            A future; ``future.result()`` returns what :meth:`call` would, or raises.

        Raises:
            TypeError: An argument cannot be encoded as JSON.
            ClosedError: The client is closed.
        """
        tel = self._conn.telemetry
        if not tel.enabled:
            call = self._start(procedure, args, kwargs, timeout, _decode_untyped)
        else:
            # the client span covers sending the request (it cannot stay open on this
            # thread until the reply); the server's span is still its child
            with tel.rpc_client_span(procedure=procedure, service=self.queue) as span:
                call = self._start(procedure, args, kwargs, timeout, _decode_untyped, span=span)
        self._schedule(call)
        return call.future

    def call_raw(
        self, body: bytes | str, *, procedure: str | None = None, timeout: float | None = None
    ) -> bytes:
        """Send a raw body and return the raw reply body (for servers that don't use hutch).

        The request carries no hutch envelope or content type; only the
        ``x-hutch-procedure`` header when ``procedure`` is given (to reach a raw procedure
        of an :class:`~hutch.RpcServer` other than its default).

        Args:
            body: The request body; ``str`` is sent as UTF-8.
            procedure: The raw procedure to call; None for the server's default or for a
                server that does not use hutch.
            timeout: Seconds to wait for the reply (default: the client's).

        Returns:
            The reply body as received.

        Raises:
            NoServer: No queue of that name exists.
            RpcTimeout: No reply within ``timeout``.
            RemoteError: A hutch server replied with an error.
            InvalidReply: The reply's properties or headers cannot be decoded.
            TypeError: ``body`` is neither bytes nor str, or ``procedure`` neither a str
                nor None.
        """
        if procedure is not None and not isinstance(procedure, str):
            raise TypeError(
                f"procedure must be a str (the raw procedure's name) or None, "
                f"got {type(procedure).__name__}"
            )
        if isinstance(body, str):
            data = body.encode()
        elif isinstance(body, (bytes, bytearray, memoryview)):
            data = bytes(body)
        else:
            raise TypeError(f"body must be bytes or str, got {type(body).__name__}")
        self._check_may_block()
        if self._conn.telemetry.enabled:
            result = self._traced(
                procedure or "",
                lambda span: self._send(
                    procedure, data, None, timeout, _decode_raw, direct=True, span=span
                ),
            )
        else:
            result = self._wait(
                self._send(procedure, data, None, timeout, _decode_raw, direct=True)
            )
        assert isinstance(result, bytes)
        return result

    @property
    def proxy(self) -> Proxy:
        """Untyped calls by attribute: ``client.proxy.add(1, 2)`` calls ``"add"``."""
        return Proxy(self)

    def stub(
        self, interface: Callable[..., I], *, prefix: str = "", timeout: float | None = None
    ) -> I:
        """A typed stand-in for ``interface`` whose methods call the server.

        ``calc = client.stub(Calculator)`` is typed as ``Calculator``, so mypy checks every
        call's arguments and knows its result type; at run time the arguments are checked
        against the method's signature before sending and the result is validated into the
        method's return annotation.

        Args:
            interface: A ``typing.Protocol`` or a class with annotated methods (typed as a
                callable so that mypy accepts protocols and abstract classes).
            prefix: Prepended to each method name (as in :meth:`RpcServer.implement`).
            timeout: Seconds each call waits (default: the client's).

        Returns:
            The stub.

        Raises:
            TypeError: ``interface`` is not a class, or its annotations cannot be validated.

        Example:
            >>> calc = client.stub(Calculator)  # doctest: +SKIP
            >>> calc.add_point(1, 2)  # doctest: +SKIP
            Point(x=1, y=2)
        """
        check_timeout("timeout", timeout, allow_none=True)
        check_str("prefix", prefix)
        if not isinstance(interface, type):
            raise TypeError(
                f"stub() needs an interface class (a typing.Protocol or a class), got {interface!r}"
            )
        key = (interface, prefix)
        signatures = self._stubs.get(key)
        if signatures is None:
            signatures = {
                attr: Signature(fn, name=prefix + attr, drop_first=takes_self)
                for attr, (fn, takes_self) in interface_methods(interface).items()
            }
            self._stubs[key] = signatures
        namespace: dict[str, object] = {"__slots__": ()}
        for attr, sig in signatures.items():
            namespace[attr] = _stub_method(self, attr, sig, timeout)
        cls = type(f"{interface.__name__}Stub", (_Stub,), namespace)
        stub = cls()
        return stub  # type: ignore[no-any-return]

    def _call_typed(
        self,
        signature: Signature,
        args: tuple[object, ...],
        kwargs: dict[str, object],
        timeout: float | None,
    ) -> object:
        # a stub's call: check the arguments locally, validate the result into its type
        signature.check_call(args, kwargs)
        self._check_may_block()

        def decode(delivery: Delivery) -> object:
            try:
                return signature.decode_result(delivery.body, delivery.content_type)
            except pydantic.ValidationError as exc:
                first = exc.errors(include_url=False, include_input=False)[0]
                path = ".".join(str(p) for p in first["loc"]) or "<result>"
                raise ValidationError(
                    f"the result of {signature.name!r} does not validate as "
                    f"{signature.return_annotation!r}: field {path!r}: {first['msg']}",
                    field=path,
                ) from None

        if self._conn.telemetry.enabled:
            return self._traced(
                signature.name,
                lambda span: self._start(
                    signature.name, args, kwargs, timeout, decode, direct=True, span=span
                ),
            )
        return self._wait(self._start(signature.name, args, kwargs, timeout, decode, direct=True))

    def _traced(self, procedure: str, start: Callable[[Scope], _Call]) -> object:
        """A blocking call inside a client span (telemetry on): send to reply or error."""
        with self._conn.telemetry.rpc_client_span(procedure=procedure, service=self.queue) as span:
            return self._wait(start(span))

    # ----------------------------------------------------------------- internals
    def _check_may_block(self) -> None:
        # the channel is opened first (inline, on the I/O thread) to ask it; the driver
        # words the refusal, the same for every blocking call and whichever thread drives
        reason = self._ensure_channel().blocking_refused(
            "a blocking call", "use call_async() there, or call from another thread"
        )
        if reason is not None:
            raise RpcError(reason)

    def _start(
        self,
        procedure: str,
        args: tuple[object, ...],
        kwargs: dict[str, object],
        timeout: float | None,
        decode: _Decoder,
        *,
        direct: bool = False,
        span: Scope | None = None,
    ) -> _Call:
        if not isinstance(procedure, str) or not procedure:
            raise TypeError("the procedure name must be a non-empty str")
        return self._send(
            procedure, encode_request(args, kwargs), JSON, timeout, decode, direct=direct, span=span
        )

    def _send(
        self,
        procedure: str | None,
        body: bytes,
        content_type: str | None,
        timeout: float | None,
        decode: _Decoder,
        *,
        direct: bool = False,
        span: Scope | None = None,
    ) -> _Call:
        """Publish a request. ``direct``: a blocking call, sent by the calling thread.

        ``span``: the call's client span (telemetry on): its context goes in the headers.
        """
        timeout = self.timeout if timeout is None else check_timeout("timeout", timeout)
        ch = self._ensure_channel()
        ch.check_connection()
        limit = self._conn.settings.max_message_size
        if len(body) > limit:
            raise MessageTooLarge(size=len(body), limit=limit, routing_key=self.queue)
        clock = self._conn.clock
        deadline = clock.now() + timeout
        if ch.blocked:
            ch.wait_unblocked(min(timeout, self._conn.settings.publish_blocked_timeout))
            timeout = max(0.001, deadline - clock.now())
        cid = f"{self._prefix}.{next(self._ids)}"
        call = _Call(cid, procedure or "", decode, deadline)
        reply_to = (
            DIRECT_REPLY_TO if self._reply_queue is None else ch.queue_name(self._reply_queue)
        )
        headers: dict[str, Any] | None = (
            {PROCEDURE_HEADER: procedure} if procedure is not None else None
        )
        if span is not None:
            headers = span.inject(headers)
        props = basic_properties(
            content_type=content_type,
            correlation_id=cid,
            reply_to=reply_to,
            expiration=str(max(1, int(timeout * 1000))),
            delivery_mode=_TRANSIENT,
            headers=headers,
        )
        self._pending[cid] = call
        if direct:
            # a blocking call sends its request and reads its reply on this thread (no
            # hand-over to the I/O thread and back), for up to _PUMP_LIMIT seconds; the
            # request has no future of its own: the call's future says what came of it
            message = OutgoingMessage(
                "",
                self.queue,
                body,
                props,
                mandatory=True,
                tracked=False,
                on_fail=lambda exc: self._on_send_failed(cid, exc),
            )
            call.blocking = threading.get_ident()
            ch.publish_and_wait(message, min(_PUMP_LIMIT, timeout), until=call.future.done)
            return call
        # call_async leaves it to the I/O thread, which sends the requests of a busy
        # moment together (more calls per second)
        sent = ch.publish(OutgoingMessage("", self.queue, body, props, mandatory=True))
        if not sent.done() or sent.exception() is not None:
            sent.add_done_callback(lambda f: self._on_sent(cid, f))
        return call

    def _on_sent(self, cid: str, sent: Future[None]) -> None:
        exc = sent.exception()
        if exc is not None:
            self._on_send_failed(cid, exc)

    def _on_send_failed(self, cid: str, exc: BaseException) -> None:
        call = self._pending.pop(cid, None)
        if call is not None and not call.future.done():
            call.future.set_exception(exc)

    def _wait(self, call: _Call) -> object:
        call.blocking = threading.get_ident()
        # read the reply on this thread when it can: no hand-over from the I/O thread
        ch = self._channel  # set: the request was sent on it
        clock = self._conn.clock
        future = call.future
        if ch is not None and not future.done():
            ch.pump(future, min(_PUMP_LIMIT, call.deadline - clock.now()))
        if not clock.virtual:  # the hot path on RabbitMQ: one wait on the future itself
            try:
                return future.result(max(0.0, call.deadline - clock.now()))
            except FutureTimeout:
                pass
        elif clock.wait_future(future, call.deadline):
            return future.result(0)
        self._expire(call.cid)
        return future.result(0)

    def _expire(self, cid: str) -> None:
        call = self._pending.pop(cid, None)
        if call is not None and not call.future.done():
            call.future.set_exception(
                RpcTimeout(
                    f"no reply from {call.name or 'the server'!r} on queue {self.queue!r} "
                    f"within the call's timeout; the server may be down, overloaded or slow"
                )
            )

    # timer for call_async deadlines -------------------------------------------
    def _schedule(self, call: _Call) -> None:
        cid = call.cid
        with self._timer_cv:
            deadlines = self._deadlines
            heapq.heappush(deadlines, (call.deadline, cid))
            if len(deadlines) > 2 * len(self._pending) + _HEAP_SLACK:
                # an entry stays until its deadline even when the reply came long before
                # (lazy deletion): drop those of settled calls once they are half the heap,
                # so it holds O(calls in flight), at O(1) amortised per call. In place:
                # the timer thread holds this list.
                pending = self._pending
                deadlines[:] = [entry for entry in deadlines if entry[1] in pending]
                heapq.heapify(deadlines)
            if self._timer is None:
                self._timer = threading.Thread(
                    target=self._run_timer, name=f"hutch-rpc-timer-{self.queue}", daemon=True
                )
                self._timer.start()
            elif self._deadlines[0][1] == cid:
                self._timer_changes += 1
                self._timer_cv.notify()

    def _run_timer(self) -> None:
        deadlines = self._deadlines
        clock = self._conn.clock
        clock.enter()
        while True:
            with self._timer_cv:
                if self._life.closed:
                    return
                now = clock.now()
                due = []
                while deadlines and deadlines[0][0] <= now:
                    due.append(heapq.heappop(deadlines)[1])
                if not due:
                    changes = self._timer_changes
                    clock.wait(
                        functools.partial(self._timer_woken, changes),
                        self._timer_cv.wait,
                        deadlines[0][0] if deadlines else None,
                    )
                    continue
            for cid in due:
                self._expire(cid)

    def _timer_woken(self, changes: int) -> bool:
        return self._life.closed or self._timer_changes != changes

    # I/O thread ---------------------------------------------------------------
    def _on_reply(self, delivery: Delivery) -> None:
        if self._reply_queue is not None:
            delivery.ack()
        cid = delivery.correlation_id
        call = self._pending.pop(cid, None) if cid is not None else None
        if call is None:
            self.dropped_replies += 1
            log.debug("hutch: dropping RPC reply %r that no call waits for (late?)", cid)
            return
        future = call.future
        if future.done():
            return
        # wire data decoded while driving the connection: whatever it holds, only this
        # call fails (an escaping error would take the connection down with every call)
        try:
            problem = delivery.problem
            if problem is not None:
                raise InvalidReply(problem, procedure=call.name)
            if delivery.headers.get(STATUS_HEADER) in (STATUS_ERROR, b"error"):
                raise decode_error(delivery.body)
            result = call.decode(delivery)
        except HutchError as exc:
            future.set_exception(exc)
        except Exception as exc:
            future.set_exception(InvalidReply(f"{type(exc).__name__}: {exc}", procedure=call.name))
        else:
            future.set_result(result)
        if call.blocking and call.blocking != threading.get_ident():
            # hand the GIL to the caller just woken, rather than keep it until this thread
            # next blocks in pika's poll: measurably lower latency for blocking calls (not
            # needed when the caller reads its reply itself, see Channel.pump)
            time.sleep(0)

    def _on_return(self, reply_code: int, reply_text: str, properties: Properties) -> None:
        cid = properties.correlation_id
        call = self._pending.pop(cid, None) if cid is not None else None
        if call is None or call.future.done():
            return
        call.future.set_exception(
            NoServer(
                f"no server queue {self.queue!r} receives calls ({reply_code} {reply_text}): "
                "start an RpcServer on that queue, or check the queue name"
            )
        )

    def _on_connection_event(self, event: str, error: BaseException | None) -> None:
        if event in ("lost", "failed") and not self._life.closed:
            # replies to calls in flight can no longer reach this connection
            self._fail_all(
                ConnectionLost(
                    f"the connection was {event} while waiting for the reply; the call may or "
                    "may not have run on the server"
                )
            )

    def _fail_all(self, error: HutchError) -> None:
        for cid in list(self._pending):
            call = self._pending.pop(cid, None)
            if call is not None and not call.future.done():
                call.future.set_exception(error)


class _Stub:
    """Base class of the stubs built by :meth:`RpcClient.stub`."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"<{type(self).__name__}>"


def _stub_method(
    client: RpcClient, attr: str, signature: Signature, timeout: float | None
) -> Callable[..., object]:
    def method(self: object, *args: object, **kwargs: object) -> object:
        return client._call_typed(signature, args, kwargs, timeout)

    method.__name__ = attr
    method.__qualname__ = attr
    method.__doc__ = f"Call the remote procedure {signature.name!r}."
    params = list(signature.python_signature.parameters.values())
    self_param = inspect.Parameter("self", inspect.Parameter.POSITIONAL_ONLY)
    method.__signature__ = signature.python_signature.replace(  # type: ignore[attr-defined]
        parameters=[self_param, *params]
    )
    return method


class Proxy:
    """Attribute-style, untyped calls: ``proxy.name(*args, **kwargs)`` calls ``name``.

    Obtained from :attr:`RpcClient.proxy`; thread-safe like the client.

    Args:
        client: The client that makes the calls.
    """

    __slots__ = ("_client",)

    def __init__(self, client: RpcClient) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Callable[..., object]:
        if name.startswith("_"):
            raise AttributeError(name)
        client = self._client

        def remote(*args: object, timeout: float | None = None, **kwargs: object) -> object:
            return client.call(name, *args, timeout=timeout, **kwargs)

        remote.__name__ = name
        return remote

    def __repr__(self) -> str:
        return f"<Proxy of {self._client!r}>"
