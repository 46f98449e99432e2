"""``--metrics-port`` of ``hutch worker`` and ``hutch serve``: Prometheus and a health probe.

While the command runs, ``GET /metrics`` answers in the Prometheus text format (hutch's
OpenTelemetry metrics through ``PrometheusMetricReader``, plus ``prometheus_client``'s
process and runtime metrics) and ``GET /healthz`` answers 200 when every check of the
command is true, 503 otherwise. Until the command has connected and started consuming,
``/healthz`` answers 503 (``{"started": false}``): a readiness probe holds traffic back and
a liveness probe with an initial delay waits. Needs the ``hutch[prometheus]`` extra.
"""

from __future__ import annotations

import argparse
import contextlib
import threading
from collections.abc import Iterator, Mapping

from hutch._cli.common import status
from hutch._telemetry.http import HealthCheck, MetricsServer, install_prometheus_reader

__all__ = [
    "DEFAULT_METRICS_HOST",
    "Probe",
    "add_metrics_options",
    "metrics_port",
    "serving",
]

#: Every interface: a container's probes and Prometheus come from outside it.
DEFAULT_METRICS_HOST = "0.0.0.0"


def metrics_port(text: str) -> int:
    """An argparse type: a TCP port, 0 to let the system pick a free one."""
    digits = text.strip()
    # not int(text) alone: it also takes "1_000", "+80" and non-ASCII digits
    if not (digits.isascii() and digits.isdigit()):
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (0 to 65535)")
    value = int(digits)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (0 to 65535)")
    return value


def add_metrics_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--metrics-port`` and ``--metrics-host`` to a long-running command."""
    group = parser.add_argument_group("metrics and health (needs: pip install 'hutch[prometheus]')")
    group.add_argument(
        "--metrics-port",
        type=metrics_port,
        default=None,
        metavar="PORT",
        help="serve Prometheus /metrics and a /healthz probe on this port while running "
        "(0 picks a free port, printed at start; default: off)",
    )
    group.add_argument(
        "--metrics-host",
        default=DEFAULT_METRICS_HOST,
        metavar="ADDR",
        help="address for --metrics-port (default: %(default)s, every interface, as "
        "container probes need; 127.0.0.1 keeps it to this machine)",
    )


class Probe:
    """What ``/healthz`` checks: nothing healthy until :meth:`watch` is given the checks.

    Any thread may call :meth:`watch` and :meth:`check` (``/healthz`` requests run on the
    metrics server's threads).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._health: HealthCheck | None = None

    def watch(self, health: HealthCheck) -> None:
        """From now on ``/healthz`` answers with ``health()``'s checks."""
        with self._lock:
            self._health = health

    def check(self) -> Mapping[str, bool]:
        """The checks; ``{"started": False}`` before :meth:`watch`."""
        with self._lock:
            health = self._health
        return {"started": False} if health is None else health()


@contextlib.contextmanager
def serving(args: argparse.Namespace) -> Iterator[Probe]:
    """Serve ``/metrics`` and ``/healthz`` if ``--metrics-port`` was given, until the end.

    Called before connecting, so that a missing extra or a port in use fails at once, and
    after the command's module is imported, so that an application that sets its own
    OpenTelemetry meter provider there keeps it.

    Raises:
        HutchError: The ``hutch[prometheus]`` extra is missing (the message says how to
            install it) or the port cannot be bound.
    """
    probe = Probe()
    if args.metrics_port is None:
        yield probe
        return
    install_prometheus_reader()
    with MetricsServer(port=args.metrics_port, host=args.metrics_host, health=probe.check) as srv:
        # not "serving ...": that line says the command itself is ready
        status(f"metrics on http://{args.metrics_host}:{srv.port}/metrics, health on /healthz")
        yield probe
