"""Trace context across the pipe to a worker process; imported only with opentelemetry-api.

``WorkerPool(processes=True)`` runs the process span in the parent (where the delivery and
its settlement are) and the handler in a child process. The parent puts the current
context (the process span's) into the task's JSON meta as W3C ``traceparent`` /
``tracestate`` / ``baggage`` strings; the child attaches it around the handler, so what the
handler publishes or calls continues the message's trace. The hop is hutch's own
protocol, so it always speaks W3C, whatever propagator the application configured.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

__all__ = ["attached", "current_carrier"]

_HOP = CompositePropagator([TraceContextTextMapPropagator(), W3CBaggagePropagator()])


def current_carrier() -> dict[str, str] | None:
    """The current context as W3C headers; None when there is no valid span to continue."""
    if not trace.get_current_span().get_span_context().is_valid:
        return None
    carrier: dict[str, str] = {}
    _HOP.inject(carrier)
    return carrier or None


@contextmanager
def attached(carrier: Mapping[str, str]) -> Iterator[None]:
    """Make the context in ``carrier`` the current one for the ``with`` block."""
    try:
        context = _HOP.extract(carrier)
    except Exception:  # a bad carrier must not fail the task: the handler starts a new trace
        yield
        return
    token = otel_context.attach(context)
    try:
        yield
    finally:
        otel_context.detach(token)
