"""OpenTelemetry SDK test rig: in-memory span exporter and metric reader, no globals touched."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from hutch._telemetry import Telemetry, create_telemetry


@dataclass
class Otel:
    """A telemetry wired to SDK providers whose output the test reads back."""

    tracer_provider: TracerProvider
    meter_provider: MeterProvider
    exporter: InMemorySpanExporter
    reader: InMemoryMetricReader
    telemetry: Telemetry

    def spans(self) -> list[ReadableSpan]:
        """Every finished span, in the order they ended."""
        return list(self.exporter.get_finished_spans())

    def span(self, name: str) -> ReadableSpan:
        """The one finished span called ``name``."""
        found = [s for s in self.spans() if s.name == name]
        assert len(found) == 1, (
            f"{len(found)} spans named {name!r}: {[s.name for s in self.spans()]}"
        )
        return found[0]

    def points(self, metric: str) -> list[tuple[dict[str, Any], Any]]:
        """The data points of ``metric``: (attributes, point) pairs, [] if never recorded."""
        data = self.reader.get_metrics_data()
        out: list[tuple[dict[str, Any], Any]] = []
        if data is None:
            return out
        for rm in data.resource_metrics:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    if m.name == metric:
                        out.extend((dict(p.attributes or {}), p) for p in m.data.data_points)
        return out

    def total(self, metric: str, **match: Any) -> float:
        """Sum of a counter's values (or a histogram's counts) over points matching ``match``."""
        total = 0.0
        for attrs, point in self.points(metric):
            if all(attrs.get(k.replace("__", ".")) == v for k, v in match.items()):
                total += point.count if hasattr(point, "bucket_counts") else point.value
        return total


def make_otel(connection_name: str | None = "test-conn") -> Otel:
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider(shutdown_on_exit=False)
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    telemetry = create_telemetry(
        connection_name=connection_name,
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
    )
    assert telemetry.enabled
    return Otel(tracer_provider, meter_provider, exporter, reader, telemetry)


@pytest.fixture
def otel() -> Iterator[Otel]:
    rig = make_otel()
    yield rig
    rig.tracer_provider.shutdown()
    rig.meter_provider.shutdown()


# A sitecustomize-like prelude for a child interpreter: `import opentelemetry` (and, when
# asked, prometheus_client) fails as if the package were not installed.
BLOCKER = """
import importlib.abc, sys
class _Block(importlib.abc.MetaPathFinder):
    def __init__(self, names):
        self.names = names
    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".")[0] in self.names:
            raise ModuleNotFoundError(f"No module named {fullname!r}", name=fullname)
        return None
sys.meta_path.insert(0, _Block(NAMES))
"""


def run_python(code: str, *, block: tuple[str, ...] = ()) -> str:
    """Run ``code`` in a fresh interpreter (optionally with packages blocked); return stdout."""
    prelude = BLOCKER.replace("NAMES", repr(set(block))) if block else ""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert done.returncode == 0, f"child failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    return done.stdout
