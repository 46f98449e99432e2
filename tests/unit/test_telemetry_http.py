"""/metrics and /healthz over real HTTP on 127.0.0.1."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from textwrap import dedent

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from prometheus_client import CollectorRegistry

from hutch import ClosedError, HutchError
from hutch._telemetry import Settlement, Telemetry, create_telemetry
from hutch._telemetry.http import MetricsServer
from tests.otel_support import run_python


def _get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


@pytest.fixture
def scraped() -> Iterator[tuple[Telemetry, CollectorRegistry]]:
    registry = CollectorRegistry()
    reader = PrometheusMetricReader(registry=registry)
    provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    yield create_telemetry(meter_provider=provider), registry
    provider.shutdown()


def test_metrics_are_served_in_the_prometheus_text_format(
    scraped: tuple[Telemetry, CollectorRegistry],
) -> None:
    tel, registry = scraped
    for _ in range(3):
        with tel.process_span(queue="jobs", exchange="", routing_key="jobs", headers=None) as s:
            s.settle(Settlement.ACKED)
    tel.on_connection_event("lost", None)
    with MetricsServer(host="127.0.0.1", port=0, registry=registry) as server:
        status, content_type, text = _get(f"http://127.0.0.1:{server.port}/metrics")
    assert status == 200
    assert content_type.startswith("text/plain")
    lines = text.splitlines()
    acked = [line for line in lines if line.startswith("hutch_messages_acked_total{")]
    assert len(acked) == 1
    assert 'messaging_destination_subscription_name="jobs"' in acked[0]
    assert acked[0].endswith(" 3.0")
    assert any(
        line.startswith("messaging_process_duration_seconds_count{") and line.endswith(" 3.0")
        for line in lines
    )
    assert any(line.startswith("hutch_connection_losses_total{") for line in lines)


def test_healthz_follows_the_health_check() -> None:
    checks = {"connection_open": True, "consumers_active": True}
    with MetricsServer(host="127.0.0.1", port=0, health=lambda: checks) as server:
        url = f"http://127.0.0.1:{server.port}/healthz"
        status, content_type, body = _get(url)
        assert (status, content_type) == (200, "application/json")
        assert json.loads(body) == {"healthy": True, "checks": checks}
        checks["consumers_active"] = False
        status, _, body = _get(url)
        assert status == 503
        assert json.loads(body)["checks"]["consumers_active"] is False
        assert _get(f"http://127.0.0.1:{server.port}/nope")[0] == 404


@settings(max_examples=30, deadline=None)
@given(
    checks=st.dictionaries(
        st.text(max_size=10), st.one_of(st.booleans(), st.none(), st.integers(0, 1)), max_size=4
    )
)
def test_healthy_only_when_every_check_is_true(checks: dict[str, object]) -> None:
    from hutch._telemetry.http import _health

    status, payload = _health(lambda: checks)  # type: ignore[arg-type, return-value]
    healthy = all(v is True for v in checks.values())
    assert payload["healthy"] is healthy
    assert status == (200 if healthy else 503)


def test_a_health_check_that_raises_is_unhealthy() -> None:
    def broken() -> dict[str, bool]:
        raise RuntimeError("cannot tell")

    with MetricsServer(host="127.0.0.1", port=0, health=broken) as server:
        status, _, body = _get(f"http://127.0.0.1:{server.port}/healthz")
    assert status == 503
    assert json.loads(body) == {"healthy": False, "error": "RuntimeError"}


def test_lifecycle_and_arguments() -> None:
    server = MetricsServer(host="127.0.0.1", port=0)
    assert "new" in repr(server)
    server.open()
    port = server.port
    assert port > 0 and "serving" in repr(server)
    with pytest.raises(HutchError, match="cannot serve metrics"):
        MetricsServer(host="127.0.0.1", port=port).open()  # the port is taken
    server.close()
    server.close()  # idempotent
    with pytest.raises(ClosedError):
        server.open()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2)
    with pytest.raises(ValueError, match="port"):
        MetricsServer(port=70000)
    with pytest.raises(TypeError, match="port"):
        MetricsServer(port=True)
    with pytest.raises(TypeError, match="health"):
        MetricsServer(port=0, health="yes")  # type: ignore[arg-type]


def test_install_prometheus_reader_feeds_the_default_registry() -> None:
    out = run_python(
        dedent(
            """
            import urllib.request
            from hutch._telemetry import PublishOutcome, create_telemetry
            from hutch._telemetry.http import MetricsServer, install_prometheus_reader
            tel = create_telemetry()
            assert install_prometheus_reader() is True
            assert install_prometheus_reader() is False   # never replaces a provider
            tel.record_publish_outcome("orders", PublishOutcome.CONFIRMED, 4)
            with MetricsServer(host="127.0.0.1", port=0) as server:
                url = f"http://127.0.0.1:{server.port}/metrics"
                print(urllib.request.urlopen(url, timeout=10).read().decode())
            """
        )
    )
    confirmed = [line for line in out.splitlines() if line.startswith("hutch_messages_confirmed")]
    assert len(confirmed) == 1 and confirmed[0].endswith(" 4.0")


def test_without_prometheus_client_the_error_says_what_to_install() -> None:
    out = run_python(
        dedent(
            """
            from hutch import HutchError
            from hutch._telemetry.http import MetricsServer
            server = MetricsServer(host="127.0.0.1", port=0)
            try:
                server.open()
            except HutchError as exc:
                print(exc)
            """
        ),
        block=("prometheus_client",),
    )
    assert "pip install 'hutch[prometheus]'" in out
