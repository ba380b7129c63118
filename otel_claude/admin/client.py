"""One long-lived HTTP client for the Anthropic Admin API.

It sends the documented headers, follows pagination to exhaustion, retries 429/5xx/timeouts
with backoff (honouring ``retry-after``), and maps every failure to a small, bounded set of
reasons for metrics and logs. The key is only ever placed in the ``x-api-key`` header: it is
never part of a URL, a log line, an exception message or a metric.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from otel_claude import __version__
from otel_claude.errors import OtelClaudeError

if TYPE_CHECKING:  # imported when a client is made: serving without a key never needs it
    import httpx

log = logging.getLogger(__name__)

API_VERSION = "2023-06-01"
USER_AGENT = f"otel-claude/{__version__} (+https://github.com/otel-claude/otel-claude)"

#: Bounded failure reasons (label values of ``otel_claude_source_errors_total``).
REASONS = (
    "unauthorized",
    "forbidden",
    "bad_request",
    "not_found",
    "rate_limited",
    "spend_limit",
    "server_error",
    "timeout",
    "connection",
    "invalid_response",
)

Params = Sequence[tuple[str, str]]


class AdminApiError(OtelClaudeError):
    """A request failed for good (after retries); ``reason`` is one of ``REASONS``."""

    def __init__(self, endpoint: str, reason: str, message: str, *, status: int | None = None):
        self.endpoint = endpoint
        self.reason = reason
        self.status = status
        super().__init__(f"{endpoint}: {message}")


class RequestStats:
    """Process-local counts of upstream requests and retries, for self-metrics."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: Counter[tuple[str, str]] = Counter()  # (endpoint, status)
        self.retries: Counter[tuple[str, str]] = Counter()  # (endpoint, reason)

    def count(self, endpoint: str, status: str) -> None:
        with self._lock:
            self.requests[(endpoint, status)] += 1

    def retry(self, endpoint: str, reason: str) -> None:
        with self._lock:
            self.retries[(endpoint, reason)] += 1

    def copy(self) -> tuple[dict[tuple[str, str], int], dict[tuple[str, str], int]]:
        """Snapshot of (requests, retries)."""
        with self._lock:
            return dict(self.requests), dict(self.retries)


class AdminClient:
    """Synchronous Admin API client; use as a context manager or call ``close()``."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 30.0,
        max_retries: int = 4,
        max_pages: int = 100,
        backoff_s: float = 1.0,
        max_wait_s: float = 60.0,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        stats: RequestStats | None = None,
    ) -> None:
        import httpx

        self._http = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers={
                "x-api-key": api_key,
                "anthropic-version": API_VERSION,
                "user-agent": USER_AGENT,
                "accept": "application/json",
            },
            timeout=httpx.Timeout(timeout, connect=min(10.0, timeout)),
            transport=transport,
            follow_redirects=False,
        )
        self._max_retries = max_retries
        # A report window fits in a few pages (168 hourly buckets, 31 days, 1,000 records
        # per page); far more means the API keeps promising pages that bring nothing.
        self.max_pages = max_pages
        self._backoff = backoff_s
        self._max_wait = max_wait_s
        self._sleep = sleep
        self.stats = stats or RequestStats()

    def __enter__(self) -> AdminClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def pages(
        self, endpoint: str, params: Params, *, max_pages: int | None = None
    ) -> Iterator[dict[str, Any]]:
        """Yield every page of a report, following ``has_more``/``next_page``.

        ``max_pages`` bounds one read (callers derive it from the window they asked for):
        an API that keeps promising pages that bring nothing must not be polled in a loop.
        """
        page: str | None = None
        seen: set[str] = set()
        cap = max_pages if max_pages is not None else self.max_pages
        while True:
            if len(seen) >= cap:
                raise AdminApiError(
                    endpoint,
                    "invalid_response",
                    f"more than {cap} pages in one read; giving up until the next poll",
                )
            query = list(params) + ([("page", page)] if page else [])
            doc = self.get(endpoint, query)
            yield doc
            if not doc.get("has_more"):
                return
            page = doc.get("next_page")
            if not isinstance(page, str) or not page or page in seen:
                raise AdminApiError(
                    endpoint,
                    "invalid_response",
                    "has_more is true but next_page is missing or repeats",
                )
            seen.add(page)

    def list_all(self, endpoint: str, params: Params = ()) -> list[dict[str, Any]]:
        """Return all items of a list endpoint (``after_id`` pagination)."""
        items: list[dict[str, Any]] = []
        after: str | None = None
        while True:
            query = [*params, ("limit", "100")] + ([("after_id", after)] if after else [])
            doc = self.get(endpoint, query)
            data = doc.get("data")
            if not isinstance(data, list):
                raise AdminApiError(endpoint, "invalid_response", "no data list")
            items.extend(d for d in data if isinstance(d, dict))
            last = doc.get("last_id")
            if not doc.get("has_more") or not isinstance(last, str) or last == after:
                return items
            after = last

    def get(self, endpoint: str, params: Params) -> dict[str, Any]:
        """GET one page, retrying transient failures; raise ``AdminApiError`` otherwise."""
        attempt = 0
        while True:
            outcome = self._attempt(endpoint, params)
            if outcome.doc is not None:
                return outcome.doc
            assert outcome.error is not None
            if outcome.retry is None or attempt >= self._max_retries:
                raise outcome.error
            attempt += 1
            delay = outcome.wait if outcome.wait is not None else self._backoff_for(attempt)
            self.stats.retry(endpoint, outcome.retry)
            log.info(
                "retrying admin request",
                extra={
                    "fields": {
                        "endpoint": endpoint,
                        "reason": outcome.retry,
                        "attempt": attempt,
                        "wait_s": round(delay, 3),
                    }
                },
            )
            self._sleep(delay)

    def _backoff_for(self, attempt: int) -> float:
        base = self._backoff * 2.0 ** (attempt - 1)
        jittered: float = base * (0.5 + random.random() / 2)
        return min(self._max_wait, jittered)

    def _attempt(self, endpoint: str, params: Params) -> _Outcome:
        """Make one request and classify what came back."""
        import httpx

        try:
            response = self._http.get(f"/v1/organizations/{endpoint}", params=list(params))
        except httpx.TimeoutException:
            self.stats.count(endpoint, "timeout")
            return _Outcome(
                error=AdminApiError(endpoint, "timeout", "request timed out"), retry="timeout"
            )
        except httpx.TransportError as exc:
            self.stats.count(endpoint, "error")
            error = AdminApiError(
                endpoint, "connection", f"connection failed ({type(exc).__name__})"
            )
            return _Outcome(error=error, retry="connection")
        status = response.status_code
        self.stats.count(endpoint, str(status))
        if status == 200:
            try:
                doc = response.json()
            except ValueError:
                doc = None
            if not isinstance(doc, dict):
                return _Outcome(
                    error=AdminApiError(
                        endpoint, "invalid_response", "body is not a JSON object", status=status
                    )
                )
            return _Outcome(doc=doc)
        message = _error_message(response)
        if status == 429:
            retry_after = _retry_after(response.headers.get("retry-after"))
            if retry_after is None and _is_spend_limit(response):
                # The organization hit its spend limit: retrying soon cannot help.
                return _Outcome(
                    error=AdminApiError(endpoint, "spend_limit", message, status=status)
                )
            error = AdminApiError(endpoint, "rate_limited", message, status=status)
            if retry_after is not None and retry_after > self._max_wait:
                return _Outcome(error=error)  # wait for the next poll instead of blocking
            return _Outcome(error=error, retry="rate_limited", wait=retry_after)
        if status >= 500:
            return _Outcome(
                error=AdminApiError(endpoint, "server_error", message, status=status),
                retry="server_error",
            )
        reason = {401: "unauthorized", 403: "forbidden", 404: "not_found"}.get(
            status, "bad_request"
        )
        return _Outcome(error=AdminApiError(endpoint, reason, message, status=status))


@dataclass
class _Outcome:
    doc: dict[str, Any] | None = None
    error: AdminApiError | None = None
    retry: str | None = None  # reason to retry, None = final
    wait: float | None = None  # server-requested wait (retry-after)


def _error_message(response: httpx.Response) -> str:
    """``HTTP 429 rate_limit_error: …`` from the documented error body, bounded in length."""
    detail = ""
    try:
        body = response.json()
        err = body.get("error", {}) if isinstance(body, dict) else {}
        if isinstance(err, dict):
            detail = f"{err.get('type', '')}: {err.get('message', '')}"
    except ValueError:
        detail = response.text[:120]
    return f"HTTP {response.status_code} {detail}".strip()[:300]


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return max(0.0, seconds)


def _is_spend_limit(response: httpx.Response) -> bool:
    try:
        body = response.json()
    except ValueError:
        return False
    if not isinstance(body, dict):
        return False
    for holder in (body, body.get("error")):
        details = holder.get("details") if isinstance(holder, dict) else None
        if isinstance(details, dict) and details.get("error_code") == (
            "enforced_spend_limit_reached"
        ):
            return True
    return False
