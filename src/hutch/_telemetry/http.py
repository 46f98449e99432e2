"""A tiny HTTP server for operators: Prometheus ``/metrics`` and a ``/healthz`` probe.

Why ``opentelemetry-exporter-prometheus`` (with ``prometheus-client`` underneath) and not
``prometheus-client`` alone: hutch counts through the OpenTelemetry metrics API only. The
exporter is OpenTelemetry's own bridge from those instruments to Prometheus, so the names,
units and attributes a Prometheus scrape shows are exactly what an application exporting
OTLP sees, and the application's views and resource apply to both. ``prometheus-client``
alone would mean a second set of instruments on hutch's hot paths, kept in step by hand,
that bypasses the application's ``MeterProvider``. The exporter fills a
``prometheus_client`` registry; this module renders it itself (``generate_latest``) rather
than with the exporter's ``start_http_server``, so that ``/healthz`` shares the port. Both
come with the ``hutch[prometheus]`` extra; the exporter is still a 0.x (beta) release,
which is acceptable for an opt-in extra that only the command line turns on.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from hutch._checks import check_int, check_str, check_timeout
from hutch._clock import VIRTUAL_CLOCK
from hutch._exceptions import ClosedError, HutchError
from hutch._resource import Resource

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["HealthCheck", "MetricsServer", "install_prometheus_reader"]

log = logging.getLogger("hutch")

#: Called for each ``/healthz`` request: named checks, healthy when every one is True,
#: e.g. ``{"connection_open": True, "consumers_active": True}``.
HealthCheck = Callable[[], Mapping[str, bool]]

_INSTALL_HINT = "pip install 'hutch[prometheus]'"


def _prometheus() -> Any:
    try:
        import prometheus_client
    except ImportError as exc:
        raise HutchError(f"serving /metrics needs prometheus-client: {_INSTALL_HINT}") from exc
    return prometheus_client


def install_prometheus_reader() -> bool:
    """Make the global meter provider one that Prometheus can scrape, if none is set yet.

    Installs an OpenTelemetry SDK ``MeterProvider`` with a ``PrometheusMetricReader``
    (resource from the ``OTEL_*`` environment variables) as the global meter provider.
    An application that already set its own SDK meter provider keeps it: add a
    ``PrometheusMetricReader`` to it for ``/metrics`` to show hutch's metrics.

    Returns:
        True if the reader was installed; False if a meter provider was already set.

    Raises:
        HutchError: opentelemetry-sdk or opentelemetry-exporter-prometheus is not installed.
    """
    try:
        from opentelemetry import metrics
        from opentelemetry.exporter.prometheus import PrometheusMetricReader
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.resources import Resource as OtelResource
    except ImportError as exc:
        raise HutchError(
            f"Prometheus metrics need the OpenTelemetry SDK and exporter: {_INSTALL_HINT}"
        ) from exc
    if isinstance(metrics.get_meter_provider(), MeterProvider):
        log.warning(
            "hutch: a meter provider is already set; /metrics shows what its readers "
            "export (add a PrometheusMetricReader to it for hutch's metrics)"
        )
        return False
    provider = MeterProvider(
        metric_readers=[PrometheusMetricReader()], resource=OtelResource.create()
    )
    metrics.set_meter_provider(provider)
    return metrics.get_meter_provider() is provider


class MetricsServer(Resource):
    """Serves ``GET /metrics`` (Prometheus text format) and ``GET /healthz`` on one port.

    ``/healthz`` answers 200 when every check of ``health`` is True, else 503, with a JSON
    body such as ``{"healthy": false, "checks": {"connection_open": false}}``; a check
    that raises counts as unhealthy. Requests are served on background threads; ``health``
    must be thread-safe and quick. Any thread may open and close the server.

    Args:
        port: TCP port; 0 picks a free one (read it back from :attr:`port`).
        host: Address to listen on. The default listens on every interface, as container
            probes and scrapers need; use ``"127.0.0.1"`` to keep it local.
        health: The health check; without one ``/healthz`` always answers 200.
        registry: The ``prometheus_client`` registry to render; its default registry (the
            one ``PrometheusMetricReader`` fills) if None.

    Raises:
        TypeError: An argument of the wrong type.
        ValueError: A port outside 0-65535.

    Example:
        >>> install_prometheus_reader()  # doctest: +SKIP
        >>> with MetricsServer(port=9102, health=lambda: {"open": conn.is_open}):  # doctest: +SKIP
        ...     pool.run()
    """

    def __init__(
        self,
        *,
        port: int,
        host: str = "0.0.0.0",  # probes and scrapers come from outside
        health: HealthCheck | None = None,
        registry: Any = None,
    ) -> None:
        self._requested_port = check_int("port", port, 0, 65535)
        check_str("host", host, non_empty=True)
        self._host = host
        if health is not None and not callable(health):
            raise TypeError(f"health must be a callable, got {type(health).__name__}")
        self._health = health
        self._registry = registry
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._closed = False
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        state = "serving" if self._server is not None else ("closed" if self._closed else "new")
        return f"<MetricsServer {self._host}:{self.port} {state}>"

    @property
    def port(self) -> int:
        """The port listened on (the one picked by the system if 0 was asked)."""
        if self._server is not None:
            return int(self._server.server_address[1])
        return self._requested_port

    def open(self) -> Self:
        """Bind the port and start serving on a background thread.

        Returns:
            This server.

        Raises:
            ClosedError: The server was closed before.
            HutchError: prometheus-client is not installed, or the port cannot be bound.
        """
        with self._lock:
            if self._closed:
                raise ClosedError("the metrics server is closed; create a new one")
            if self._server is not None:
                return self
            prometheus = _prometheus()
            registry = self._registry if self._registry is not None else prometheus.REGISTRY
            handler = _handler(prometheus, registry, self._health)
            try:
                server = ThreadingHTTPServer((self._host, self._requested_port), handler)
            except OSError as exc:
                raise HutchError(
                    f"cannot serve metrics on {self._host}:{self._requested_port}: {exc}"
                ) from exc
            server.daemon_threads = True
            self._server = server
            self._thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": 0.2},
                name=f"hutch-metrics-{self.port}",
                daemon=True,
            )
            VIRTUAL_CLOCK.ignore(self._thread)  # serves HTTP, never acts on a broker
            self._thread.start()
        log.info("hutch: serving /metrics and /healthz on %s:%d", self._host, self.port)
        return self

    def close(self, timeout: float | None = 5.0) -> None:
        """Stop serving and release the port. Idempotent.

        Args:
            timeout: Seconds to wait for the serving thread.
        """
        timeout = check_timeout("timeout", timeout, allow_none=True)
        with self._lock:
            self._closed = True
            server, thread = self._server, self._thread
            self._server = self._thread = None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout)


def _handler(
    prometheus: Any, registry: Any, health: HealthCheck | None
) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "hutch"

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                body = prometheus.generate_latest(registry)
                self._answer(200, prometheus.CONTENT_TYPE_LATEST, body)
            elif path == "/healthz":
                status, payload = _health(health)
                self._answer(status, "application/json", json.dumps(payload).encode())
            else:
                self._answer(404, "text/plain; charset=utf-8", b"not found: try /metrics\n")

        def _answer(self, status: int, content_type: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("hutch: metrics server: " + format, *args)

    return Handler


def _health(health: HealthCheck | None) -> tuple[int, dict[str, Any]]:
    if health is None:
        return 200, {"healthy": True, "checks": {}}
    try:
        checks = {str(name): ok is True for name, ok in health().items()}
    except Exception as exc:
        log.debug("hutch: health check raised", exc_info=True)
        return 503, {"healthy": False, "error": type(exc).__name__}
    healthy = all(checks.values())
    return (200 if healthy else 503), {"healthy": healthy, "checks": checks}
