"""HTTP surface: ``/metrics``, ``/healthz``, ``/readyz``, ``/`` and ``POST /v1/events``.

A small threaded stdlib server is enough: every request is short, and the ledger serializes
writers anyway. ``POST /v1/events`` answers 202 only after its batch is committed, so 202
means the messages survive a crash of the exporter.
"""

from __future__ import annotations

import hmac
import json
import logging
import socket
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry

from otel_claude import __version__
from otel_claude.errors import LedgerError
from otel_claude.exposition.page import MetricsPage
from otel_claude.health import SourceHealth
from otel_claude.landing import LandingData, render_landing
from otel_claude.ledger import Ledger
from otel_claude.sources.ingest import BatchTooLarge, Limits, parse_body
from otel_claude.websecurity import WebSecurity

log = logging.getLogger(__name__)

INGEST_SOURCE = "ingest"
MAX_REJECTIONS_LISTED = 1000
# The landing page runs no script and loads nothing: say so to the browser.
LANDING_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


class IngestEndpoint:
    """The semantics of ``POST /v1/events``, independent of the HTTP plumbing.

    ``max_bytes`` is enforced by the handler from ``Content-Length`` before the body is read;
    ``limits`` (line length, nesting depth, messages per body) apply to the body itself.
    """

    def __init__(
        self,
        ledger: Ledger,
        *,
        token: str | None,
        max_bytes: int,
        limits: Limits | None = None,
        health: SourceHealth | None = None,
    ) -> None:
        self._ledger = ledger
        self._health = health
        self._failing = False
        self._token = token
        self.max_bytes = max_bytes
        self.limits = limits if limits is not None else Limits()

    def authorized(self, header: str | None) -> bool:
        """Whether the ``Authorization`` header carries the ingest token (if one is set)."""
        if self._token is None:
            return True
        if not header or not header.startswith("Bearer "):
            return False
        return hmac.compare_digest(header[7:].strip().encode(), self._token.encode())

    def post(self, body: bytes) -> tuple[int, dict[str, Any]]:
        """Apply one body; return the HTTP status and JSON answer.

        Never raises: a fault of this code answers 500 (and is logged) rather than dropping
        the connection without an answer.
        """
        try:
            return self._post(body)
        except Exception:
            log.exception("ingest failed")
            return 500, {"error": "internal error (logged by the exporter); retrying is safe"}

    def _post(self, body: bytes) -> tuple[int, dict[str, Any]]:
        if not body.strip():
            return 400, {"error": "empty body: send a JSON message, a JSON array or NDJSON"}
        try:
            parsed = parse_body(body, INGEST_SOURCE, self.limits)
        except BatchTooLarge as exc:
            return 413, {
                "error": f"{exc.count} messages exceed the limit of {exc.limit} per request; "
                "split them into batches (nothing was applied)",
                "messages": exc.count,
                "max_batch_messages": exc.limit,
            }
        lines = [line for line, _ in parsed]
        try:
            summary = self._ledger.apply([item for _, item in parsed], source=INGEST_SOURCE)
        except LedgerError as exc:
            log.error("ingest not committed", extra={"fields": {"error": str(exc)}})
            self._failing = True
            if self._health is not None:  # down, and /readyz not ready, until a commit works
                self._health.failed("ingest", reason="ledger", duration=0.0)
            return 503, {"error": "the ledger could not commit this batch; retry later"}
        if self._failing:
            self._failing = False
            if self._health is not None:
                self._health.succeeded("ingest", at=time.time(), duration=0.0)
        rejected = [{"line": lines[i], "reason": reason} for i, reason in summary.rejected]
        answer: dict[str, Any] = {
            "accepted": summary.accepted,
            "duplicates": summary.duplicates,
            "ignored": summary.ignored,
            "rejected": rejected[:MAX_REJECTIONS_LISTED],
        }
        if len(rejected) > MAX_REJECTIONS_LISTED:
            answer["rejected_total"] = len(rejected)
        if rejected:
            log.info(
                "messages rejected",
                extra={
                    "fields": {
                        "count": len(rejected),
                        "first_line": rejected[0]["line"],
                        "first_reason": rejected[0]["reason"],
                    }
                },
            )
        if summary.accepted + summary.duplicates + summary.ignored == 0:
            answer["error"] = "no usable message in body"
            return 400, answer
        return 202, answer


class ExporterServer(ThreadingHTTPServer):
    """The threaded HTTP server, carrying the application objects the handler needs."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self,
        address: tuple[str, int],
        *,
        registry: CollectorRegistry,
        ingest: IngestEndpoint,
        sources: SourceHealth,
        landing: LandingData | None = None,
        security: WebSecurity | None = None,
    ) -> None:
        self.registry = registry
        self.metrics_page = MetricsPage()
        self.security = security or WebSecurity()
        self._tls = self.security.ssl_context()
        self.ingest = ingest
        self.sources = sources
        # Without landing data the page shows the sources only (no figures).
        self.landing = landing if landing is not None else LandingData(sources)
        self.started = time.time()
        super().__init__(address, _Handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        """Accept; with TLS the handshake runs in the handler's thread, not the accept loop."""
        conn, addr = super().get_request()
        if self._tls is not None:
            conn = self._tls.wrap_socket(conn, server_side=True, do_handshake_on_connect=False)
        return conn, addr

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A failed TLS handshake or a dropped client is routine: log it at debug level."""
        log.debug("connection error", extra={"fields": {"client": str(client_address[0])}})


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; with Nagle on, the body waits for the
    # client's delayed ACK (~40 ms per response on Linux).
    disable_nagle_algorithm = True
    # A client that announces a body and then trickles it must not hold a thread forever.
    timeout = 30
    server: ExporterServer
    server_version = f"otel-claude/{__version__}"

    def log_message(self, format: str, *args: Any) -> None:
        if log.isEnabledFor(logging.DEBUG):
            log.debug("http request", extra={"fields": {"line": format % args}})

    def _send(
        self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, doc: dict[str, Any], **headers: str) -> None:
        self._send(status, json.dumps(doc).encode() + b"\n", "application/json", headers)

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        security = self.server.security
        if path != "/healthz" and not security.authorized(self.headers.get("Authorization")):
            self.close_connection = True
            self._json(
                401,
                {"error": "authentication required"},
                Connection="close",
                **{"WWW-Authenticate": 'Basic realm="otel-claude"'},
            )
            return
        routes: dict[str, Callable[[], None]] = {
            "/metrics": self._metrics,
            "/healthz": lambda: self._send(200, b"ok\n", "text/plain; charset=utf-8"),
            "/readyz": self._readyz,
            "/": self._landing,
        }
        route = routes.get(path)
        if route is None:
            self._json(404, {"error": f"no such page: {path}"})
        else:
            route()

    def _metrics(self) -> None:
        answer = self.server.metrics_page.render(
            self.server.registry,
            self.headers.get("Accept", ""),
            self.headers.get("Accept-Encoding", ""),
        )
        self.send_response(200)
        self.send_header("Content-Type", answer.content_type)
        self.send_header("Content-Length", str(answer.length))
        for name, value in answer.headers.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            for part in answer.parts:  # the cached text as is: no 12 MB join per scrape
                self.wfile.write(part)

    def _readyz(self) -> None:
        # Not ready while a source waits for its first pass, or while the ledger refuses
        # writes (ingest down): a load balancer should send events elsewhere.
        states = self.server.sources.states()
        waiting = self.server.sources.not_ready() + (
            ["ingest"] if "ingest" in states and not states["ingest"].up else []
        )
        if waiting:
            down = {n: s.last_error for n, s in states.items() if not s.up and s.last_error}
            self._json(503, {"ready": False, "waiting_for": waiting, "down": down})
        else:
            self._json(200, {"ready": True})

    def _landing(self) -> None:
        page = render_landing(self.server.landing.view())
        self._send(200, page.encode(), "text/html; charset=utf-8", LANDING_HEADERS)

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0]
        ingest = self.server.ingest
        if path != "/v1/events":
            self.close_connection = True
            self._json(404, {"error": f"no such endpoint: {path}"}, Connection="close")
            return
        if not ingest.authorized(self.headers.get("Authorization")):
            self.close_connection = True
            self._json(
                401,
                {"error": "missing or wrong bearer token"},
                Connection="close",
                **{"WWW-Authenticate": 'Bearer realm="otel-claude"'},
            )
            return
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            self.close_connection = True
            self._json(
                411,
                {"error": "send a Content-Length (chunked bodies are not accepted)"},
                Connection="close",
            )
            return
        length_header = self.headers.get("Content-Length")
        try:
            length = int(length_header) if length_header is not None else -1
        except ValueError:
            length = -1
        if length < 0:
            self.close_connection = True
            self._json(411, {"error": "Content-Length is required"}, Connection="close")
            return
        if length > ingest.max_bytes:
            self.close_connection = True
            self._json(
                413,
                {
                    "error": f"body of {length} bytes exceeds the limit of "
                    f"{ingest.max_bytes} bytes; split it into batches"
                },
                Connection="close",
            )
            return
        body = self.rfile.read(length)
        status, answer = ingest.post(body)
        self._json(status, answer)
