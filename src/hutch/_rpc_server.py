"""RpcServer: serve Python functions as remote procedures on a queue."""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, overload

from hutch._amqp import ChannelApi, Delivery, OutgoingMessage, basic_properties
from hutch._checks import check_bool, check_int, check_shortstr, check_timeout
from hutch._clock import Mailbox, join_thread
from hutch._connection import Connection, resolve_connection
from hutch._dead_letter import DeadLetters, Disposition, requeue_later
from hutch._exceptions import ClosedError, ConsumerCancelled, HutchError
from hutch._lifecycle import Lifecycle, LifecycleState
from hutch._resource import Resource
from hutch._rpc_protocol import (
    PROCEDURE_HEADER,
    STATUS_ERROR,
    STATUS_HEADER,
    STATUS_OK,
    CallError,
    Signature,
    decode_request,
    encode_error,
    interface_methods,
)
from hutch._serialization import JSON
from hutch._signals import graceful_signals
from hutch._telemetry import NOOP_SCOPE, Scope
from hutch._topology import Queue

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["RpcServer"]

log = logging.getLogger("hutch")
#: One INFO line per call answered (``hutch serve -v`` shows them).
call_log = logging.getLogger("hutch.call")

F = TypeVar("F", bound=Callable[..., object])

_STOP = object()
# longest an idle worker reads the connection waiting for a request before it waits
# for the I/O thread to hand one over (see RpcServer._next_request)
_LEAD = 0.5
_TRANSIENT = 1


class _Procedure:
    __slots__ = ("fn", "name", "signature")

    def __init__(self, name: str, fn: Callable[..., object], signature: Signature) -> None:
        self.name = name
        self.fn = fn
        self.signature = signature


class RpcServer(Resource):
    """Serves registered functions as remote procedures on one queue.

    Register functions with :meth:`procedure`, :meth:`register` or :meth:`implement`,
    then serve with :meth:`run` (blocking) or :meth:`start` (in the background). Each
    request's arguments are validated against the function's annotations with pydantic,
    and its result is encoded by the return annotation (see ``docs/rpc-wire-format.md``).

    Threads: the connection's I/O thread only hands requests over; handlers run on a pool
    of ``concurrency`` worker threads, so they may block as long as they need (heartbeats
    keep flowing). :meth:`register` and friends must be called before serving;
    :meth:`stop` may be called from any thread or a signal handler.

    Acks: a request is acked after its reply has been published (both go out in that
    order on the server's one channel), so a server that dies mid-call leaves the request
    to be redelivered: procedures should be idempotent. A request whose ``expiration``
    (the time its caller waits) has run out before a worker picks it up is acked and not
    run; the broker itself drops requests that expire in the queue. A request that fails
    and has no ``reply_to`` (nobody would learn why), or that hutch itself fails on, is
    published to ``dead_letter_queue`` with the reason and then acked; if that copy
    cannot be placed, the request is requeued after a pause, never dropped.

    The queue is declared non-durable and not auto-deleted, as in RabbitMQ's RPC
    tutorial: requests are worthless once their callers have timed out, so they need not
    survive a broker restart, but the queue outlives server restarts so that callers wait
    for a restarted server instead of failing. Pass a :class:`~hutch.Queue` for other
    settings (e.g. ``auto_delete=True`` to make callers fail at once with
    :class:`~hutch.NoServer` when no server runs).

    Args:
        connection: A :class:`~hutch.Connection` (shared) or a URL (owned: opened and
            closed with the server); None (the default) is ``HUTCH_URL``'s broker.
        queue: The request queue: a name or a :class:`~hutch.Queue` to declare.
        concurrency: Number of worker threads running handlers.
        prefetch: Requests the broker may send ahead; at least ``concurrency``. Default
            ``2 * concurrency``, so workers find the next request waiting.
        include_traceback: Send the handler's traceback text in error replies.
        timeout: Seconds allowed for each broker operation, and for in-flight handlers
            to finish when the server closes.
        default: The raw procedure that receives requests naming no procedure (plain
            AMQP clients). Default: the only raw procedure, if exactly one is registered.
        dead_letter_queue: Where requests go that cannot be answered: those that fail
            (cannot be decoded, name no procedure, the procedure raised...) and carry no
            ``reply_to`` to send the error to, and those hutch itself failed on. Each
            copy is published *mandatory* and *confirmed* with the reason in
            ``x-hutch-error``, as by :class:`~hutch.Subscriber`. Default
            ``<queue>.dead`` (declared durable on first use).

    Raises:
        TypeError: A wrong argument type.
        ValueError: An invalid argument value.

    Example:
        >>> server = RpcServer(conn, queue="calc")  # doctest: +SKIP
        >>> @server.procedure  # doctest: +SKIP
        ... def add(x: int, y: int) -> int:
        ...     return x + y
        >>> server.run()  # doctest: +SKIP
    """

    def __init__(
        self,
        connection: Connection | str | None = None,
        *,
        queue: str | Queue = "rpc_queue",
        concurrency: int = 4,
        prefetch: int | None = None,
        include_traceback: bool = False,
        timeout: float = 30.0,
        default: str | None = None,
        dead_letter_queue: Queue | str | None = None,
    ) -> None:
        if isinstance(queue, str):
            if not queue:
                raise ValueError("queue must name the request queue, e.g. 'rpc_queue'")
            check_shortstr("queue", queue)
            queue = Queue(queue, durable=False, auto_delete=False)
        elif not isinstance(queue, Queue):
            raise TypeError("queue must be a queue name or a hutch.Queue")
        elif queue.server_named:
            raise ValueError("an RPC server needs a named queue that clients can address")
        check_int("concurrency", concurrency, 1, 10_000)  # (worker threads)
        if prefetch is None:
            prefetch = min(2 * concurrency, 65535)
        check_int("prefetch", prefetch, 1, 65535)
        if prefetch < concurrency:
            raise ValueError(
                f"prefetch={prefetch} would leave workers idle: make it at least "
                f"concurrency={concurrency}"
            )
        timeout = check_timeout("timeout", timeout)
        check_bool("include_traceback", include_traceback)
        if default is not None and not isinstance(default, str):
            raise TypeError("default must be a procedure name")
        if dead_letter_queue is None:
            dead_letter_queue = f"{queue.name}.dead"
        if isinstance(dead_letter_queue, str):
            if not dead_letter_queue:
                raise ValueError("dead_letter_queue must name a queue, e.g. 'rpc_queue.dead'")
            check_shortstr("dead_letter_queue", dead_letter_queue)
            dead_letter_queue = Queue(dead_letter_queue)
        elif not isinstance(dead_letter_queue, Queue):
            raise TypeError("dead_letter_queue must be a queue name or a hutch.Queue")
        elif dead_letter_queue.server_named:
            raise ValueError("dead_letter_queue needs a named queue, e.g. 'rpc_queue.dead'")
        self._conn, self._owns_conn = resolve_connection(connection)
        self.queue = queue
        self.concurrency = concurrency
        self.prefetch = prefetch
        self.include_traceback = include_traceback
        self.timeout = float(timeout)
        self._drain_timeout = self.timeout
        self.default = default
        #: The queue of requests that could not be answered (see the class docstring).
        self.dead_letter_queue = dead_letter_queue
        self._dead: DeadLetters | None = None
        self._procedures: dict[str, _Procedure] = {}
        self._default: _Procedure | None = None
        self._lock = threading.Lock()
        self._counter_lock = threading.Lock()
        self._inbox: Mailbox[Any] = Mailbox()
        self._leading = threading.local()
        self._busy = 0  # workers handling a request now
        self._workers: list[threading.Thread] = []
        self._supervisor: threading.Thread | None = None
        self._channel: ChannelApi | None = None
        self._tag: str | None = None
        self._stop_requested = False
        self._wake = threading.Event()
        self._done = threading.Event()
        self._cancelled: str | None = None
        self._error: HutchError | None = None
        self._life = LifecycleState("the server", "the server is closed; create a new one")
        #: Requests answered (with a result or an error).
        self.handled = 0
        #: Requests answered with an error.
        self.failed = 0
        #: Requests dropped unrun because their caller had given up.
        self.expired = 0
        #: Requests not answered (no ``reply_to``, or hutch failed on them) whose copy the
        #: dead-letter queue confirmed; the original was then acked.
        self.dead_lettered = 0
        #: Requests that could neither be answered nor dead-lettered: requeued after a
        #: pause (or given back by the broker when their channel was gone), never acked.
        self.requeued = 0

    def __repr__(self) -> str:
        state = "closed" if self._life.closed else ("serving" if self._supervisor else "idle")
        return (
            f"<RpcServer queue={self.queue.name!r} procedures={sorted(self._procedures)} {state}>"
        )

    @property
    def procedures(self) -> list[str]:
        """The registered procedure names, sorted."""
        return sorted(self._procedures)

    @property
    def is_running(self) -> bool:
        """True between :meth:`start` and :meth:`stop` (False once it stopped by itself).

        Safe to read from any thread, e.g. by a health check.
        """
        return (
            self._life.state is Lifecycle.OPEN
            and not self._stop_requested
            and not self._done.is_set()
        )

    # ----------------------------------------------------------------- registration
    @overload
    def procedure(self, fn: F, /) -> F: ...

    @overload
    def procedure(self, /, *, name: str | None = None, raw: bool = False) -> Callable[[F], F]: ...

    def procedure(
        self,
        fn: Callable[..., object] | None = None,
        /,
        *,
        name: str | None = None,
        raw: bool = False,
    ) -> object:
        """Register a function with ``@server.procedure`` or ``@server.procedure(name=...)``.

        Args:
            fn: The function (when used without parentheses).
            name: The procedure name; default the function's ``__name__``.
            raw: Register a raw procedure (see :meth:`register`).

        Returns:
            The function itself, unchanged, or a decorator.

        Raises:
            ValueError: The name is taken.
            TypeError: The annotations cannot be validated.

        Example:
            >>> @server.procedure(name="math.add")  # doctest: +SKIP
            ... def add(x: int, y: int) -> int:
            ...     return x + y
        """
        if fn is not None:
            return self.register(fn, name, raw=raw)

        def decorate(f: Callable[..., object]) -> Callable[..., object]:
            return self.register(f, name, raw=raw)

        return decorate

    def register(self, fn: F, name: str | None = None, *, raw: bool = False) -> F:
        """Register a function as a procedure.

        A typed procedure receives the request's ``args``/``kwargs`` validated against its
        annotations. A *raw* procedure takes one parameter that receives the request body
        as it is (``bytes``), as text (``str`` or no annotation) or validated from the
        body's JSON (``int``, ``float``, a model...); it replies ``bytes`` as they are, a
        ``str`` as text and anything else as JSON. Raw procedures serve programs that do
        not use hutch, e.g. a classic pika client sending ``"30"``.

        Args:
            fn: The function; it runs on a worker thread.
            name: The procedure name; default ``fn.__name__``.
            raw: Register as a raw procedure.

        Returns:
            ``fn`` unchanged.

        Raises:
            ValueError: The name is empty or already registered.
            TypeError: ``fn`` is not callable, or its annotations cannot be validated.
        """
        if not callable(fn):
            raise TypeError(f"a procedure must be callable, got {type(fn).__name__}")
        if name is None:
            name = getattr(fn, "__name__", None)
            if not isinstance(name, str) or name == "<lambda>":
                raise ValueError("give the procedure a name: register(fn, name='...')")
        self._add(_Procedure(name, fn, Signature(fn, name=name, raw=raw)))
        return fn

    def implement(
        self, interface: Callable[..., object], impl: object, *, prefix: str = ""
    ) -> None:
        """Register every public method of ``interface``, implemented by ``impl``.

        The interface (a ``typing.Protocol`` or any class with annotated methods) is the
        contract: its annotations validate the arguments and encode the results, and
        clients build typed stubs from the same class with :meth:`RpcClient.stub`.

        Args:
            interface: The interface class (typed as a callable so that mypy accepts
                protocols and abstract classes).
            impl: The object whose methods do the work. To have mypy check it against a
                protocol, annotate it: ``impl: Calculator = CalculatorImpl()``.
            prefix: Prepended to every method name (e.g. ``"calc."``); use the same prefix
                in :meth:`RpcClient.stub`.

        Raises:
            TypeError: ``interface`` is not a class, or ``impl`` lacks one of its methods.
            ValueError: A procedure name is already registered.

        Example:
            >>> server.implement(Calculator, CalculatorImpl())  # doctest: +SKIP
        """
        methods = interface_methods(interface)  # type: ignore[arg-type]
        procedures = []
        for attr, (fn, takes_self) in methods.items():
            target = getattr(impl, attr, None)
            if not callable(target):
                raise TypeError(
                    f"{type(impl).__name__} does not implement {interface.__name__}.{attr}()"
                )
            name = prefix + attr
            procedures.append(
                _Procedure(name, target, Signature(fn, name=name, drop_first=takes_self))
            )
        for proc in procedures:
            self._add(proc)

    def _add(self, proc: _Procedure) -> None:
        if not proc.name:
            raise ValueError("a procedure name must not be empty")
        with self._lock:
            if self._supervisor is not None:
                raise ValueError("register procedures before the server starts")
            if proc.name in self._procedures:
                raise ValueError(f"a procedure named {proc.name!r} is already registered")
            self._procedures[proc.name] = proc

    def _resolve_default(self) -> _Procedure | None:
        if self.default is not None:
            proc = self._procedures.get(self.default)
            if proc is None:
                raise ValueError(
                    f"default={self.default!r} names no registered procedure; registered: "
                    + (", ".join(self.procedures) or "none")
                )
            if not proc.signature.raw:
                raise ValueError(
                    f"default={self.default!r} must be a raw procedure (register(fn, raw=True)): "
                    "requests naming no procedure carry a plain body, not hutch's envelope"
                )
            return proc
        raw = [p for p in self._procedures.values() if p.signature.raw]
        return raw[0] if len(raw) == 1 else None

    # ----------------------------------------------------------------- lifecycle
    def start(self) -> Self:
        """Start serving in the background (returns at once once consuming).

        Returns:
            This server.

        Raises:
            ValueError: No procedure is registered, or ``default`` is not a raw procedure.
            ClosedError: The server was closed.
            PreconditionFailed: The queue exists with other settings.
        """
        with self._lock:
            self._life.check_usable()
            if self._supervisor is not None:
                return self
            if not self._procedures:
                raise ValueError("register at least one procedure before serving")
            self._default = self._resolve_default()
            if self._owns_conn and not self._conn.is_open:
                self._conn.open()
            ch = self._conn.channel()
            try:
                ch.declare([self.queue], timeout=self.timeout)
                ch.qos(self.prefetch, timeout=self.timeout)
                # no I/O yet: its confirm channel opens on the first dead letter
                self._dead = DeadLetters(self._conn, self.dead_letter_queue, self.queue.name)
                self._workers = [
                    threading.Thread(
                        target=self._work,
                        args=(ch,),
                        name=f"hutch-rpc-{self.queue.name}-{i}",
                        daemon=True,
                    )
                    for i in range(self.concurrency)
                ]
                for t in self._workers:
                    t.start()
                self._tag = ch.consume(
                    self.queue, self._on_request, on_cancel=self._on_cancel, timeout=self.timeout
                )
            except BaseException:
                for _ in self._workers:
                    self._inbox.put(_STOP)
                ch.close()
                raise
            self._channel = ch
            self._supervisor = threading.Thread(
                target=self._supervise,
                args=(ch,),
                name=f"hutch-rpc-{self.queue.name}",
                daemon=True,
            )
            self._life.move(Lifecycle.OPEN)
            self._supervisor.start()
        log.info(
            "hutch: RPC server on queue %r serving %s (%d workers)",
            self.queue.name,
            ", ".join(self.procedures),
            self.concurrency,
        )
        return self

    def run(self, *, handle_signals: bool = True) -> None:
        """Serve until :meth:`stop` is called (blocking), then close the server.

        In-flight requests are answered before it returns; requests received but not
        started are requeued for other servers. On the main thread, the first SIGTERM
        or SIGINT stops it that way and ``run`` returns; a second one raises
        :class:`KeyboardInterrupt` at once (see :mod:`hutch._signals`). The previous
        handlers are restored on return.

        Args:
            handle_signals: False leaves SIGTERM/SIGINT to the caller.

        Raises:
            ConsumerCancelled: The broker cancelled the consumer (the queue was deleted).
            ConnectionLost: The connection failed for good.
            ClosedError: The connection was closed under the server (from another thread,
                a handler, a ``with`` block's exit).
            TypeError: ``handle_signals`` is not a bool.
            KeyboardInterrupt: A second SIGTERM/SIGINT while finishing the requests in hand.
        """
        check_bool("handle_signals", handle_signals)
        self.start()
        what = f"the RPC server on {self.queue.name!r}"
        with graceful_signals(self.stop, what, enabled=handle_signals):
            clock, done = self._conn.clock, self._done
            while not clock.wait(done.is_set, done.wait, None, poll=0.2):
                pass
        if self._error is not None:
            raise self._error

    def stop(self) -> None:
        """Ask the server to stop; :meth:`run` returns once in-flight requests are answered.

        Safe to call from any thread and from a signal handler (it only sets a flag).
        """
        self._stop_requested = True
        if threading.current_thread() is not threading.main_thread():
            self._wake.set()

    def close(self, timeout: float | None = None) -> None:
        """Stop consuming, answer in-flight requests, close the channel. Idempotent.

        Args:
            timeout: Seconds to wait for in-flight handlers (default: the server's timeout).
        """
        check_timeout("timeout", timeout, allow_none=True)
        with self._lock:
            if not self._life.move(Lifecycle.CLOSING):
                return
            supervisor = self._supervisor
            if timeout is not None:
                self._drain_timeout = timeout
        self.stop()
        self._wake.set()
        if supervisor is not None:
            join_thread(supervisor, self._drain_timeout + 2 * self.timeout)
        elif self._owns_conn:
            self._conn.close()
        if supervisor is None:  # never served: nothing else ends the lifecycle
            with self._lock:
                self._life.move(Lifecycle.CLOSED)

    def open(self) -> Self:
        """Start serving in the background; what ``with`` does.

        Returns:
            This server.
        """
        return self.start()

    # ----------------------------------------------------------------- supervisor
    def _on_cancel(self, queue: str) -> None:  # I/O thread
        self._cancelled = queue
        self._wake.set()

    def _why_stop(self, ch: ChannelApi) -> HutchError | None:
        """Why the server must stop by itself, if it must (lock-free reads only)."""
        if self._cancelled is not None:
            return ConsumerCancelled(self._cancelled)
        if ch.connection_failure is not None:
            return ch.connection_failure
        if not self._conn.is_open:  # closed under the server: a thread, a handler, a with exit
            return ClosedError("the RPC server's connection was closed")
        return None

    def _supervise(self, ch: ChannelApi) -> None:
        clock, wake = self._conn.clock, self._wake

        def woken() -> bool:
            return wake.is_set() or self._stop_requested or self._why_stop(ch) is not None

        try:
            while not self._stop_requested:
                # stop() on the main thread (a signal handler) sets no event: look each 0.1 s
                # (a virtual clock wakes it sooner, with wake.set, from its own thread)
                clock.wait(woken, wake.wait, None, poll=0.1, wake=wake.set)
                wake.clear()
                self._error = self._why_stop(ch)
                if self._error is not None:
                    break
            self._shutdown()
        finally:
            with self._lock:
                if self._error is not None:
                    self._life.fail(self._error)
                self._life.move(Lifecycle.CLOSED)
            self._done.set()

    def _shutdown(self) -> None:
        ch = self._channel
        if ch is not None and self._tag is not None and self._error is None:
            try:
                ch.cancel(self._tag, timeout=self.timeout)
            except HutchError as exc:
                log.debug("hutch: cancelling the RPC consumer failed: %s", exc)
        requeued = 0
        for _ in self._workers:
            self._inbox.put(_STOP)
        deadline = time.monotonic() + self._drain_timeout  # real time: handlers run in it
        for t in self._workers:
            join_thread(t, max(0.0, deadline - time.monotonic()))
        stuck = [t.name for t in self._workers if t.is_alive()]
        if stuck:
            log.warning(
                "hutch: RPC handlers still running after %.1f s on %s; their requests will be "
                "redelivered",
                self._drain_timeout,
                ", ".join(stuck),
            )
        # requests received after the workers stopped: give them back
        while (item := self._inbox.take()) is not None:
            if isinstance(item, tuple):
                item[0].nack(requeue=True)
                requeued += 1
        if requeued:
            log.info("hutch: requeued %d RPC requests not yet started", requeued)
        if ch is not None:
            ch.close(timeout=self.timeout)
        if self._dead is not None:
            self._dead.close()
        if self._owns_conn:
            self._conn.close()
        log.info("hutch: RPC server on queue %r stopped", self.queue.name)

    # ----------------------------------------------------------------- requests
    def _on_request(self, delivery: Delivery) -> None:  # I/O thread: hand over, never block
        mine: list[Any] | None = getattr(self._leading, "mine", None)
        if mine is not None and not mine:
            mine.append((delivery, self._conn.clock.now()))  # the leading worker keeps it
        else:
            self._inbox.put((delivery, self._conn.clock.now()))

    def _next_request(self, ch: ChannelApi, mine: list[Any]) -> Any:
        if mine:  # read while replying to the last one (see _handle)
            return mine.pop()
        item = self._inbox.take()
        if item is not None:
            return item
        if not self._stop_requested and not self._busy:
            # Leader/followers: when the server is idle, an idle worker reads the connection
            # itself until a request comes in, and handles that one: no hand-over from the
            # I/O thread. Only one worker leads at a time, and none while another handles a
            # request (its reply needs the connection); then the I/O thread passes requests
            # on through the inbox, which under load also batches them.
            self._leading.mine = mine
            try:
                ch.pump_until(lambda: bool(mine) or self._stop_requested, _LEAD, wait=0)
            finally:
                self._leading.mine = None
            if mine:
                return mine.pop()
        return self._inbox.get(self._conn.clock, None)

    def _work(self, ch: ChannelApi) -> None:
        mine: list[Any] = []
        while True:
            item = self._next_request(ch, mine)
            if item is _STOP:
                return
            if self._stop_requested:
                item[0].nack(requeue=True)
                continue
            with self._counter_lock:
                self._busy += 1
            try:
                if self._conn.telemetry.enabled:
                    self._handle_traced(*item)
                else:
                    self._handle(*item, lead=mine)
            except BaseException as exc:  # never lose a worker, nor the request
                log.exception("hutch: RPC worker failed on a request; dead-lettering it")
                self._dead_letter(
                    item[0], f"the RPC server failed on the request: {exc}", type(exc).__name__
                )
            finally:
                with self._counter_lock:
                    self._busy -= 1

    def _handle_traced(self, delivery: Delivery, received: float) -> None:
        """:meth:`_handle` inside a server span, child of the caller's (telemetry on)."""
        name = delivery.headers.get(PROCEDURE_HEADER)
        if isinstance(name, bytes):
            name = name.decode(errors="replace")
        with self._conn.telemetry.rpc_server_span(
            procedure=name if isinstance(name, str) else "",
            service=self.queue.name,
            headers=delivery.headers,
            correlation_id=delivery.correlation_id,
            message_id=delivery.properties.message_id,
            body_size=len(delivery.body),
        ) as span:
            self._handle(delivery, received, span)

    def _handle(
        self,
        delivery: Delivery,
        received: float,
        span: Scope = NOOP_SCOPE,
        *,
        lead: list[Any] | None = None,
    ) -> None:
        expiration = delivery.expiration
        if (
            expiration is not None
            and expiration.isdigit()
            and (self._conn.clock.now() - received) * 1000 >= int(expiration)
        ):
            log.debug(
                "hutch: dropping expired RPC request %s (caller gave up)", delivery.correlation_id
            )
            with self._counter_lock:
                self.expired += 1
            delivery.ack()
            return
        name = delivery.headers.get(PROCEDURE_HEADER)
        if isinstance(name, bytes):
            name = name.decode(errors="replace")
        status = STATUS_OK
        error_type = reason = ""
        try:
            problem = delivery.problem
            if problem is not None:
                # the caller learns why at once (or, without reply_to, the dead-letter queue)
                raise CallError("DecodeError", f"the request cannot be decoded: {problem}")
            proc = self._lookup(name)
            sig = proc.signature
            if sig.raw:
                result = proc.fn(sig.raw_argument(delivery.body))
            else:
                args, kwargs = decode_request(delivery.body, delivery.content_type)
                call_args, call_kwargs = sig.bind(args, kwargs)
                result = proc.fn(*call_args, **call_kwargs)
            body, content_type = sig.encode_result(result)
        except CallError as exc:
            status = STATUS_ERROR
            error_type, reason = exc.type_name, exc.message
            body, content_type = encode_error(exc.type_name, exc.message), JSON
            log.debug("hutch: RPC request %r refused: %s: %s", name, exc.type_name, exc.message)
            span.fail(exc)
        except Exception as exc:
            status = STATUS_ERROR
            span.fail(exc)
            error_type, reason = type(exc).__name__, str(exc)
            tb = traceback.format_exc() if self.include_traceback else None
            body, content_type = encode_error(type(exc).__name__, str(exc), tb), JSON
            log.debug("hutch: RPC procedure %r raised", name, exc_info=True)
        limit = self._conn.settings.max_message_size
        if len(body) > limit:
            status = STATUS_ERROR
            error_type, reason = "MessageTooLarge", "the reply exceeds max_message_size"
            body = encode_error(
                "MessageTooLarge",
                f"the reply of {len(body)} bytes exceeds max_message_size={limit} bytes",
            )
            content_type = JSON
        # one line per call (``hutch serve -v`` shows them)
        call_log.info(
            "call %s on %r: %s in %.3f s",
            name if isinstance(name, str) else "(default)",
            self.queue.name,
            "ok" if status == STATUS_OK else "error",
            self._conn.clock.now() - received,
        )
        reply_to = delivery.reply_to
        if not isinstance(reply_to, str):  # bytes: not UTF-8, no queue can be named so
            reply_to = None
        if status == STATUS_ERROR and not reply_to:
            # nobody to tell: the dead-letter queue keeps the request and why it failed
            self._dead_letter(delivery, reason or "the request failed", error_type or "Error")
            return
        with self._counter_lock:  # counted before the caller can see the reply
            self.handled += 1
            if status == STATUS_ERROR:
                self.failed += 1
        ch = delivery.channel
        if reply_to:
            reply = OutgoingMessage(
                "",
                reply_to,
                body,
                basic_properties(
                    content_type=content_type,
                    correlation_id=delivery.correlation_id,
                    delivery_mode=_TRANSIENT,
                    headers={STATUS_HEADER: status},
                ),
                tracked=False,
            )
            # published first, acked second: by this thread when no other request is in
            # hand (the quickest reply), else by the I/O thread, which batches them
            direct = self._busy <= 1 and not self._inbox.ready()
            if direct and lead is not None and not lead and not self._stop_requested:
                # the server is idle: this worker goes on reading the connection for the
                # next request in the same hold of it (see _next_request); not inside a
                # traced call, whose span would then last until the next request
                self._leading.mine = lead
                try:
                    ch.publish_then_ack(
                        reply,
                        delivery,
                        lead_until=lambda: bool(lead) or self._stop_requested,
                        lead_limit=_LEAD,
                    )
                finally:
                    self._leading.mine = None
            else:
                ch.publish_then_ack(reply, delivery, direct=direct)
        else:
            log.debug("hutch: RPC request %r has no reply_to; result dropped", name)
            delivery.ack()

    def _dead_letter(self, delivery: Delivery, reason: str, error_type: str) -> None:
        """Account for a request that gets no reply: dead-lettered, or requeued."""
        dead = self._dead
        went = Disposition.REQUEUED
        if dead is not None and delivery.channel.is_current(delivery):
            try:
                went = dead.send(
                    delivery, reason=reason, error_type=error_type, timeout=self.timeout
                )
            except Exception as exc:  # never ack what was not placed
                log.error("hutch: could not dead-letter an RPC request, requeueing it: %s", exc)
                requeue_later(delivery, pending=dead.pending)
        # else the channel that delivered it is gone: the broker gives it back
        with self._counter_lock:
            if went is Disposition.DEAD_LETTERED:
                self.dead_lettered += 1
            else:
                self.requeued += 1

    def _lookup(self, name: object) -> _Procedure:
        if name is None:
            if self._default is None:
                raise CallError(
                    "UnknownProcedure",
                    f"the request names no procedure (header {PROCEDURE_HEADER!r}) and the "
                    f"server on queue {self.queue.name!r} has no default procedure",
                )
            return self._default
        proc = self._procedures.get(str(name))
        if proc is None:
            raise CallError(
                "UnknownProcedure",
                f"no procedure {name!r} on queue {self.queue.name!r}; it serves: "
                + ", ".join(self.procedures),
            )
        return proc
