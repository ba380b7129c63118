"""A real loopback HTTP server that plays the Anthropic Admin API.

The exporter's poller talks to it exactly as it would talk to
``https://api.anthropic.com``: keep-alive HTTP/1.1, JSON bodies, documented
error shapes and headers.  Tests steer it with a fake clock, queue faults with
:meth:`Simulator.inject` (error statuses, slow answers, and the broken answers of
:data:`FAULT_KINDS`: reset connections, cut or malformed bodies, pagination that
never ends or loops), read the request log in :attr:`Simulator.requests`,
and compare what the exporter counted with the ground-truth helpers
(:meth:`Simulator.usage_truth`, :meth:`Simulator.cost_truth`,
:meth:`Simulator.claude_code_truth`), which read the same deterministic
:class:`~otel_claude.simulator.world.World` the endpoints serve from.
"""

from __future__ import annotations

import itertools
import json
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

from otel_claude.simulator.api import (
    AdminApi,
    ApiError,
    decode_token,
    encode_token,
    error_body,
    parse_time,
)
from otel_claude.simulator.world import (
    COST_GROUPS,
    DAY,
    HOUR,
    MINUTE,
    USAGE_DIMENSIONS,
    USAGE_FIELDS,
    World,
    make_id,
    to_epoch,
)

DEFAULT_API_KEY = "sk-ant-admin01-simulator"
DEFAULT_HISTORY_DAYS = 40

_FAULT_MESSAGES = {
    429: "Number of requests has exceeded your rate limit. Please try again later.",
    500: "Internal server error",
    503: "Service temporarily unavailable",
    529: "Overloaded",
}
_SPEND_LIMIT_MESSAGE = "Your organization has reached its monthly spend limit."

#: Broken answers :meth:`Simulator.inject` can produce with ``kind=...``:
#:
#: * ``reset``: the request is read, then the connection is closed with a TCP reset and
#:   no answer at all (recorded with status 0).
#: * ``short_body``: a 200 whose ``content-length`` announces the whole body, but only the
#:   first half is sent before the connection is closed (broken HTTP framing).
#: * ``truncated_json``: a 200 carrying the first half of the JSON body, with a
#:   ``content-length`` matching what is sent (valid HTTP, cut JSON).
#: * ``malformed``: a 200 with a complete body that is not JSON.
#: * ``empty_page``: a 200 page with no buckets, ``has_more: true`` and a ``next_page``
#:   that leads back to the requested buckets (a different token every time, so a client
#:   that follows it forever never sees a token twice).
#: * ``repeat_page``: the real page, but with ``has_more: true`` and ``next_page`` pointing
#:   at the buckets just served (on a first page, a token for its ``starting_at``; on a
#:   later page, the very token that was sent): pagination that loops.
#: * ``revised_down``: the real usage page with every token count halved, as if the API
#:   revised those buckets down; the next normal answer brings the values back up.
#:
#: The paging kinds apply to the bucketed reports (usage and cost), ``revised_down`` to the
#: usage report; an error answer (bad key, bad parameter) is sent unchanged.
FAULT_KINDS = (
    "reset",
    "short_body",
    "truncated_json",
    "malformed",
    "empty_page",
    "repeat_page",
    "revised_down",
)
_PAGING_KINDS = ("empty_page", "repeat_page")
_PAGED_ENDPOINTS = ("usage_report/messages", "cost_report")
_MALFORMED_BODY = b'{"data": [{"starting_at": "2026-01-01T00:00:00Z", "results": [}, "has_more"'


@dataclass(frozen=True)
class RequestRecord:
    """One request as the simulator saw and answered it."""

    method: str
    path: str
    query: dict[str, list[str]]
    status: int
    at: float  # clock() when the answer was produced


@dataclass(frozen=True)
class Answer:
    """What the HTTP layer sends for one request.

    ``kind`` is ``None`` for a normal answer, else the transport-level fault of
    :data:`FAULT_KINDS` the handler must act out (``reset``, ``short_body``).
    """

    status: int
    body: bytes
    headers: dict[str, str]
    kind: str | None = None


@dataclass
class _Fault:
    status: int | None
    remaining: int
    endpoint: str | None
    retry_after: float | None
    spend_limit: bool
    delay_s: float
    kind: str | None = None

    def matches(self, path: str) -> bool:
        return self.endpoint is None or path.rstrip("/").endswith(self.endpoint)


def _halved(value: Any) -> Any:
    """Every integer in ``value`` (nested dicts and lists) halved, rounding down."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value // 2
    if isinstance(value, dict):
        return {k: _halved(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_halved(v) for v in value]
    return value


def _format_seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


class Simulator:
    """The Anthropic Admin API (usage, cost, Claude Code analytics, workspaces, API keys).

    Data is a pure function of ``seed`` and the clock (see
    :mod:`otel_claude.simulator.world`), so tests get exact expectations from
    the ``*_truth`` methods at any instant they choose.
    """

    def __init__(
        self,
        *,
        seed: int = 1,
        api_key: str = DEFAULT_API_KEY,
        clock: Callable[[], float] = time.time,
        data_start: datetime | None = None,
        latency_s: float = 0.0,
        late_data: bool = True,
        revisions: bool = True,
    ) -> None:
        """Create a stopped simulator.

        ``data_start`` (aware datetime) is floored to the hour; usage exists
        from there on.  By default it is 40 days before ``clock()``.
        """
        if data_start is None:
            start = int(clock() - DEFAULT_HISTORY_DAYS * DAY)
        else:
            start = to_epoch(data_start)
        self.seed = seed
        self.api_key = api_key
        self.clock = clock
        self.latency_s = latency_s
        self.world = World(
            seed=seed, data_start=start - start % HOUR, late_data=late_data, revisions=revisions
        )
        self.api = AdminApi(self.world, api_key)
        self.workspaces: list[dict[str, Any]] = self.world.workspaces
        self.api_keys: list[dict[str, Any]] = self.world.api_keys
        self.requests: list[RequestRecord] = []
        #: Called with every :class:`RequestRecord` (e.g. to log requests).
        self.on_request: Callable[[RequestRecord], None] | None = None
        self._lock = threading.Lock()
        self._faults: list[_Fault] = []
        self._counter = itertools.count(1)
        self._fresh_tokens = itertools.count(1)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._url: str | None = None

    # ------------------------------------------------------------ lifecycle

    @property
    def data_start(self) -> datetime:
        """First instant with usage (UTC, on the hour)."""
        return datetime.fromtimestamp(self.world.data_start, UTC)

    @property
    def url(self) -> str:
        """Base URL of the running server."""
        if self._url is None:
            raise RuntimeError("simulator is not running")
        return self._url

    def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve on a daemon thread; return the base URL (``http://127.0.0.1:PORT``)."""
        if self._server is not None:
            raise RuntimeError("simulator already started")
        server = _Server((host, port), self)
        bound_host, bound_port = server.server_address[:2]
        shown = bound_host if isinstance(bound_host, str) else bound_host.decode()
        if ":" in shown:
            shown = f"[{shown}]"
        thread = threading.Thread(
            target=server.serve_forever,
            name=f"admin-api-simulator:{bound_port}",
            daemon=True,
        )
        thread.start()
        self._server, self._thread = server, thread
        self._url = f"http://{shown}:{bound_port}"
        return self._url

    def stop(self) -> None:
        """Stop serving and close open connections (idempotent)."""
        server, thread = self._server, self._thread
        if server is None:
            return
        self._server = self._thread = self._url = None
        stopper = threading.Thread(target=server.shutdown, daemon=True)
        stopper.start()
        while stopper.is_alive():
            server.wake()  # a connection attempt ends the poll wait at once
            stopper.join(0.01)
        server.close_connections()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> Simulator:
        if self._server is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ------------------------------------------------------------ faults

    def inject(
        self,
        status: int | None = None,
        *,
        count: int = 1,
        endpoint: str | None = None,
        retry_after: float | None = None,
        spend_limit: bool = False,
        delay_s: float = 0.0,
        kind: str | None = None,
    ) -> None:
        """Queue a fault for the next ``count`` requests whose path ends with ``endpoint``.

        * ``status=429``: rate-limit error, with a ``retry-after`` header when
          ``retry_after`` is given.  ``spend_limit=True`` (status may be left
          out) answers the spend-limit 429: ``error.details.error_code`` is
          ``enforced_spend_limit_reached`` and there is no ``retry-after``.
        * other statuses (500, 503, 529, ...): the documented error JSON.
        * ``status=None`` with ``delay_s > 0``: sleep, then answer normally
          (provokes client timeouts).  ``delay_s`` also delays an error answer.
        * ``kind`` (one of :data:`FAULT_KINDS`, no ``status``): a broken answer —
          a reset connection, a cut or malformed body, or pagination that never ends
          or loops.  The paging kinds need ``endpoint`` set to a bucketed report
          (``usage_report/messages`` or ``cost_report``).  The transport kinds only
          take effect through the HTTP server (:meth:`process` cannot act them out).

        Faults are consumed in the order they were queued, by the next
        matching requests whatever their headers (a fault is answered before
        authentication); ``endpoint=None`` matches every path.
        """
        if kind is not None:
            if kind not in FAULT_KINDS:
                raise ValueError(f"kind must be one of {', '.join(FAULT_KINDS)}, got {kind!r}")
            if status is not None or spend_limit or retry_after is not None:
                raise ValueError("a fault kind replaces the answer: give no status with it")
            if kind in _PAGING_KINDS and (endpoint or "").strip("/") not in _PAGED_ENDPOINTS:
                raise ValueError(
                    f"{kind} needs endpoint={' or '.join(map(repr, _PAGED_ENDPOINTS))}"
                )
            if kind == "revised_down" and (endpoint or "").strip("/") != _PAGED_ENDPOINTS[0]:
                raise ValueError(f"revised_down needs endpoint={_PAGED_ENDPOINTS[0]!r}")
        if spend_limit:
            if status not in (None, 429):
                raise ValueError("spend_limit faults are 429 responses")
            if retry_after is not None:
                raise ValueError("the spend-limit 429 carries no retry-after")
            status = 429
        if status is None and delay_s <= 0 and kind is None:
            raise ValueError("give a status, a kind, or delay_s > 0 for a slow response")
        if status is not None and not 400 <= status <= 599:
            raise ValueError(f"status must be an HTTP error status, got {status}")
        if count < 1:
            raise ValueError("count must be at least 1")
        fault = _Fault(
            status=status,
            remaining=count,
            endpoint=endpoint.strip("/") if endpoint else None,
            retry_after=retry_after,
            spend_limit=spend_limit,
            delay_s=delay_s,
            kind=kind,
        )
        with self._lock:
            self._faults.append(fault)

    def clear_faults(self) -> None:
        """Drop every queued fault."""
        with self._lock:
            self._faults.clear()

    def _take_fault(self, path: str) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.matches(path):
                    fault.remaining -= 1
                    if fault.remaining == 0:
                        self._faults.remove(fault)
                    return fault
        return None

    # ------------------------------------------------------------ requests

    def process(
        self, method: str, target: str, headers: Mapping[str, str]
    ) -> tuple[int, bytes, dict[str, str]]:
        """Answer one request (``target`` = path and query): status, body and headers."""
        answer = self.respond(method, target, headers)
        return answer.status, answer.body, answer.headers

    def respond(self, method: str, target: str, headers: Mapping[str, str]) -> Answer:
        """Answer one request, including the transport-level fault to act out (if any)."""
        split = urlsplit(target)
        path = split.path
        query = parse_qs(split.query, keep_blank_values=True)
        request_id = make_id("req_", self.seed, "request", next(self._counter))
        if self.latency_s > 0:
            time.sleep(self.latency_s)
        fault = self._take_fault(path)
        if fault is not None and fault.delay_s > 0:
            time.sleep(fault.delay_s)
        now = self.clock()
        kind = fault.kind if fault is not None else None
        if fault is not None and fault.status is not None:
            status, body, extra = self._fault_reply(fault)
        else:
            lowered = {name.lower(): value for name, value in headers.items()}
            reply = self.api.handle(method, path, query, lowered, now)
            status, body, extra = reply.status, reply.body, reply.headers
            if kind in _PAGING_KINDS and status == 200:
                body = self._paging_fault(kind, query, body)
            elif kind == "revised_down" and status == 200:
                body = {**body, "data": _halved(body.get("data", []))}
        if body.get("type") == "error":
            body["request_id"] = request_id
            kind = None  # errors are answered as they are
        recorded = 0 if kind == "reset" else status
        record = RequestRecord(method=method, path=path, query=query, status=recorded, at=now)
        with self._lock:
            self.requests.append(record)
        if self.on_request is not None:
            self.on_request(record)
        out_headers = {
            "content-type": "application/json",
            "request-id": request_id,
            "anthropic-organization-id": self.world.organization_id,
            **extra,
        }
        payload = json.dumps(body, separators=(",", ":")).encode()
        if kind == "truncated_json":
            payload = payload[: len(payload) // 2]
        elif kind == "malformed":
            payload = _MALFORMED_BODY
        transport = kind if kind in ("reset", "short_body") else None
        return Answer(status, payload, out_headers, transport)

    def _paging_fault(
        self, kind: str | None, query: Mapping[str, list[str]], page: dict[str, Any]
    ) -> dict[str, Any]:
        """Rewrite a real page for the ``empty_page`` / ``repeat_page`` faults."""
        token = (query.get("page") or [""])[0]
        if kind == "repeat_page" and token:
            return {**page, "has_more": True, "next_page": token}
        try:  # the first bucket this request asked for (valid: the API just answered it)
            first = (
                parse_time("page", decode_token(token))
                if token
                else parse_time("starting_at", query["starting_at"][0])
            )
        except (ApiError, KeyError, IndexError):
            return page
        stamp = datetime.fromtimestamp(first, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        if kind == "repeat_page":
            return {**page, "has_more": True, "next_page": encode_token(f"{stamp}Z")}
        # A fresh spelling of the same instant each time (fractions of a second are
        # dropped by the API's bucket arithmetic): never the same token twice in a row.
        fraction = next(self._fresh_tokens) % 1_000_000
        return {
            "data": [],
            "has_more": True,
            "next_page": encode_token(f"{stamp}.{fraction:06d}Z"),
        }

    @staticmethod
    def _fault_reply(fault: _Fault) -> tuple[int, dict[str, Any], dict[str, str]]:
        assert fault.status is not None
        headers: dict[str, str] = {}
        if fault.spend_limit:
            details = {"error_code": "enforced_spend_limit_reached"}
            return 429, error_body(429, _SPEND_LIMIT_MESSAGE, details), headers
        if fault.retry_after is not None:
            headers["retry-after"] = _format_seconds(fault.retry_after)
        message = _FAULT_MESSAGES.get(fault.status, f"simulated HTTP {fault.status}")
        return fault.status, error_body(fault.status, message), headers

    # ------------------------------------------------------------ ground truth

    def usage_truth(
        self,
        start: datetime,
        end: datetime,
        group_by: Sequence[str],
        *,
        at: float | None = None,
        filters: Mapping[str, Collection[str]] | None = None,
    ) -> dict[tuple[str | None, ...], dict[str, int]]:
        """Usage over ``[start, end)`` as the usage report serves it at time ``at``.

        ``start``/``end`` are aware datetimes on whole minutes.  ``at=None``
        gives the final values (all late data in, corrections applied, phantom
        amounts withdrawn) — including minutes that lie in the clock's future.
        Keys are the values of ``group_by`` in that order (``None`` where the
        API returns null: default workspace, Console usage, ``account_id``,
        ``service_account_id``); only groups with some usage are present.
        Values map each name in ``USAGE_FIELDS`` (``uncached_input_tokens``,
        ``output_tokens``, ``cache_read_input_tokens``, ``cache_creation_5m``,
        ``cache_creation_1h``, ``web_search_requests``) to an integer.
        ``filters`` maps a dimension name (e.g. ``"model"``) to allowed values,
        like the report's ``models[]`` etc.
        """
        lo, hi = _aligned(start, MINUTE, "start"), _aligned(end, MINUTE, "end")
        for name in group_by:
            if name not in USAGE_DIMENSIONS:
                raise ValueError(f"unknown usage dimension {name!r}")
        groups = self.world.usage(lo, hi, list(group_by), at, filters)
        return {key: dict(zip(USAGE_FIELDS, fields, strict=True)) for key, fields in groups.items()}

    def cost_truth(
        self,
        start: datetime,
        end: datetime,
        group_by: Sequence[str],
        *,
        at: float | None = None,
    ) -> dict[tuple[str | None, ...], Decimal]:
        """Cents over the UTC days in ``[start, end)`` as the cost report serves them at ``at``.

        ``start``/``end`` are aware datetimes at UTC midnight.  The key is built
        from ``group_by`` in its order: ``"workspace_id"`` adds one element
        (the workspace id, ``None`` for the default workspace) and
        ``"description"`` adds six: ``(description, cost_type, model,
        token_type, service_tier, context_window)`` exactly as served (the
        last four are ``None`` for web search and code execution rows).  So
        ``("workspace_id", "description")`` gives 7-tuples and ``()`` gives
        ``()``.  Each served amount is an atomic (day, workspace, description)
        row rounded to 5 decimals; coarser groups and multi-day ranges are
        exact sums of those rows.  ``at=None``: every hour of the days counted.
        """
        lo, hi = _aligned(start, DAY, "start"), _aligned(end, DAY, "end")
        for name in group_by:
            if name not in COST_GROUPS:
                raise ValueError(f"cost report groups by workspace_id or description, not {name!r}")
        return {k: v for k, v in self.world.cost(lo, hi, list(group_by), at).items() if v}

    def claude_code_truth(self, day: date, *, at: float | None = None) -> list[dict[str, Any]]:
        """The Claude Code records served for ``day`` at ``at`` (None = the whole day)."""
        return self.world.claude_code_records(day, at)


def _aligned(moment: datetime, unit: int, name: str) -> int:
    epoch = to_epoch(moment)
    if epoch % unit:
        raise ValueError(f"{name} must be aligned to {unit} seconds, got {moment.isoformat()}")
    return epoch


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], simulator: Simulator) -> None:
        self.simulator = simulator
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def track(self, connection: socket.socket, *, add: bool) -> None:
        with self._connections_lock:
            if add:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

    def wake(self) -> None:
        """Connect to ourselves so ``serve_forever`` notices a shutdown request now."""
        host, port = self.server_address[:2]
        try:
            socket.create_connection((str(host), int(port)), timeout=0.2).close()
        except OSError:
            pass

    def close_connections(self) -> None:
        """Wake handler threads blocked on idle keep-alive connections."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            return  # the client went away; nothing to report
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    timeout = 120  # idle keep-alive connections are dropped after this many seconds
    server_version = "admin-api-simulator"
    sys_version = ""
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, add=False)

    def do_GET(self) -> None:
        self._serve()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def _serve(self) -> None:
        try:
            length = int(self.headers.get("content-length") or 0)
        except ValueError:
            length = 0
            self.close_connection = True
        if length > 0:
            self.rfile.read(length)
        answer = self.server.simulator.respond(self.command, self.path, dict(self.headers.items()))
        if answer.kind == "reset":
            self._reset()
            return
        body = answer.body
        try:
            self.send_response(answer.status)
            for name, value in answer.headers.items():
                self.send_header(name, value)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            if answer.kind == "short_body":
                self.wfile.write(body[: len(body) // 2])
                self.close_connection = True  # the rest never comes
            else:
                self.wfile.write(body)
        except (ConnectionError, TimeoutError):
            self.close_connection = True

    def _reset(self) -> None:
        """Drop the connection with a TCP RST (SO_LINGER 0) and no answer at all."""
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.rfile.close()  # the buffered reader holds a reference to the socket
        self.connection.close()

    def date_time_string(self, timestamp: float | None = None) -> str:
        """The ``Date`` header follows the simulator's clock, not the wall clock."""
        if timestamp is None:
            timestamp = self.server.simulator.clock()
        return super().date_time_string(timestamp)

    def log_message(self, format: str, *args: Any) -> None:
        return  # requests are recorded in Simulator.requests instead
