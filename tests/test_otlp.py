"""OTLP export end to end: the real ``serve`` process pushes to a receiver decoding protobuf.

The receiver is a plain stdlib HTTP server, so what is checked is the bytes on the wire as
any OpenTelemetry Collector would get them, against the generator's independent truth.
"""

from __future__ import annotations

import gzip
import math
import threading
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality, Metric
from prometheus_client.parser import text_string_to_metric_families

from tests.procs import post_lines, running_exporter
from tests.streams import Truth, generate

OTLP_DEFAULT_PORT = 4318  # where an SDK left on its defaults would send OTLP/HTTP


class OtlpReceiver(ThreadingHTTPServer):
    """A minimal OTLP/HTTP metrics endpoint that keeps every decoded request in order."""

    daemon_threads = True

    def __init__(self, port: int = 0) -> None:
        self.requests: list[ExportMetricsServiceRequest] = []
        self.errors: list[str] = []
        self.arrived = threading.Condition()
        super().__init__(("127.0.0.1", port), _OtlpHandler)

    @property
    def url(self) -> str:
        """Base URL for ``OTEL_EXPORTER_OTLP_ENDPOINT`` (the SDK appends ``/v1/metrics``)."""
        return f"http://127.0.0.1:{self.server_address[1]}"

    def record(self, request: ExportMetricsServiceRequest) -> None:
        with self.arrived:
            self.requests.append(request)
            self.arrived.notify_all()

    def wait_for(self, count: int, timeout: float) -> bool:
        """Whether at least ``count`` requests arrived within ``timeout`` seconds."""
        with self.arrived:
            return self.arrived.wait_for(lambda: len(self.requests) >= count, timeout)


class _OtlpHandler(BaseHTTPRequestHandler):
    server: OtlpReceiver

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.headers.get("Content-Encoding", "").lower() == "gzip":
            body = gzip.decompress(body)
        content_type = self.headers.get("Content-Type", "")
        if self.path != "/v1/metrics" or content_type != "application/x-protobuf":
            self.server.errors.append(f"{self.path} {content_type}")
            self.send_response(404 if self.path != "/v1/metrics" else 415)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        request = ExportMetricsServiceRequest()
        request.ParseFromString(body)
        self.server.record(request)
        answer = ExportMetricsServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)


def _start_receiver(port: int = 0) -> OtlpReceiver:
    receiver = OtlpReceiver(port)
    threading.Thread(
        target=receiver.serve_forever, kwargs={"poll_interval": 0.05}, name="otlp", daemon=True
    ).start()
    return receiver


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    server = _start_receiver()
    yield server
    server.shutdown()
    server.server_close()


# --- decoding helpers -----------------------------------------------------------------


def _attrs(attributes: Any) -> dict[str, str]:
    return {kv.key: kv.value.string_value for kv in attributes}


def _metrics(request: ExportMetricsServiceRequest) -> dict[str, Metric]:
    return {
        metric.name: metric
        for resource in request.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
    }


def _points(metric: Metric) -> dict[tuple[tuple[str, str], ...], int | float]:
    """Data points keyed by their sorted attributes; ints stay ints (exact comparison)."""
    out: dict[tuple[tuple[str, str], ...], int | float] = {}
    for point in metric.sum.data_points:
        value = point.as_int if point.WhichOneof("value") == "as_int" else point.as_double
        out[tuple(sorted(_attrs(point.attributes).items()))] = value
    return out


def _tokens(metric: Metric) -> Counter[tuple[str, str]]:
    tokens: Counter[tuple[str, str]] = Counter()
    for key, value in _points(metric).items():
        attrs = dict(key)
        assert set(attrs) == {"model", "token_type", "source"}
        assert attrs["source"] == "ingest"
        assert value == int(value)
        tokens[(attrs["model"], attrs["token_type"])] += int(value)
    return +tokens


def _by(metric: Metric, *keys: str) -> dict[tuple[str, ...], int | float]:
    return {tuple(dict(k)[name] for name in keys): v for k, v in _points(metric).items() if v}


# --- tests ----------------------------------------------------------------------------


def test_otlp_export_matches_truth_and_metrics(tmp_path: Path, receiver: OtlpReceiver) -> None:
    lines, truth = generate(seed=21, sessions=25)
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_METRIC_EXPORT_INTERVAL": "500",
    }
    with running_exporter(tmp_path, env) as exporter:
        totals = post_lines(exporter.url, lines, batches=4)
        assert totals["accepted"] == truth.usage_lines
        scraped = httpx.get(f"{exporter.url}/metrics", timeout=10.0).text
        assert receiver.wait_for(1, timeout=10.0), "no periodic OTLP export within 10 s"
        code = exporter.stop()
    assert code == 0, exporter.log.read_text()
    assert receiver.errors == []
    last = receiver.requests[-1]
    _assert_export_matches(last, truth)

    # One ledger, two views: the scrape before shutdown equals the final push.
    prom: Counter[tuple[str, str]] = Counter()
    for family in text_string_to_metric_families(scraped):
        for sample in family.samples:
            if sample.name == "claude_agent_tokens_total":
                prom[(sample.labels["model"], sample.labels["token_type"])] += int(sample.value)
    assert +prom == _tokens(_metrics(last)["claude.agent.tokens"])

    # Cumulative sums never go down from one export to the next.
    seen: dict[tuple[str, tuple[tuple[str, str], ...]], int | float] = {}
    for request in receiver.requests:
        for name, metric in _metrics(request).items():
            for key, value in _points(metric).items():
                assert value >= seen.get((name, key), 0), (name, key)
                seen[(name, key)] = value


def _assert_export_matches(request: ExportMetricsServiceRequest, truth: Truth) -> None:
    resources = [_attrs(r.resource.attributes) for r in request.resource_metrics]
    assert resources and all(r.get("service.name") == "otel-claude" for r in resources)
    metrics = _metrics(request)
    for name in (
        "claude.agent.tokens",
        "claude.agent.cost.usd",
        "claude.agent.steps",
        "claude.agent.conversations",
    ):
        assert name in metrics, sorted(metrics)
        metric = metrics[name]
        assert metric.WhichOneof("data") == "sum", name
        assert metric.sum.is_monotonic, name
        assert (
            metric.sum.aggregation_temporality
            == AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
        ), name
    assert metrics["claude.agent.tokens"].unit == "{token}"
    assert _tokens(metrics["claude.agent.tokens"]) == +truth.tokens

    cost = _by(metrics["claude.agent.cost.usd"], "model", "cost_source")
    for cost_source, expected in (
        ("reported", truth.reported_pico),
        ("estimated", truth.estimated_pico()),
    ):
        got = {model: v for (model, src), v in cost.items() if src == cost_source}
        assert set(got) == set(expected), cost_source
        for model, pico in expected.items():
            assert math.isclose(got[model], pico / 1e12, rel_tol=1e-9), (cost_source, model)

    steps = _by(metrics["claude.agent.steps"], "model")
    assert steps == {(m,): v for m, v in truth.steps.items()}
    outcomes = _by(metrics["claude.agent.conversations"], "outcome")
    assert outcomes == {(o,): v for o, v in truth.conversations.items()}


def test_no_otel_variables_no_export(tmp_path: Path) -> None:
    """OTLP is opt-in: with no OTEL_* variable nothing is pushed, not even to the default port.

    The receiver sits on the SDK's default endpoint (localhost:4318) when that port is free,
    so an exporter falling back to SDK defaults would be caught; the final flush at shutdown
    is covered by waiting until after the process has exited.
    """
    try:
        server = _start_receiver(OTLP_DEFAULT_PORT)
    except OSError:
        server = _start_receiver()
    try:
        lines, _truth = generate(seed=21, sessions=25)
        with running_exporter(tmp_path) as exporter:
            post_lines(exporter.url, lines, batches=4)
            assert not server.wait_for(1, timeout=1.5)
            code = exporter.stop()
        assert code == 0, exporter.log.read_text()
        # Any flush at shutdown was sent before the process exited; allow it to be handled.
        assert not server.wait_for(1, timeout=0.3)
    finally:
        server.shutdown()
        server.server_close()
