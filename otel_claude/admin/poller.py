"""Run the Admin API reports on a fixed schedule, isolating each one's failures.

A report that fails keeps its last committed totals (the counters simply stop growing), is
marked down in ``SourceHealth``, and is tried again on the next cycle.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from otel_claude.admin.client import AdminApiError
from otel_claude.errors import LedgerError
from otel_claude.health import SourceHealth

log = logging.getLogger(__name__)


class Report(Protocol):
    """What the poller needs from a report."""

    name: str

    def poll(self) -> None:
        """Read upstream and commit what changed."""


class Poller:
    """Polls every report once per interval (the API asks for at most one request a minute)."""

    def __init__(
        self,
        reports: Sequence[Report],
        health: SourceHealth,
        *,
        interval_s: float,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._reports = list(reports)
        self._health = health
        self._interval = interval_s
        self._clock = clock
        self._monotonic = monotonic
        for report in self._reports:
            health.enable(report.name)

    def poll_once(self) -> None:
        """Poll each report that is due; record success or the failure reason."""
        for report in self._reports:
            due = getattr(report, "due", None)
            if callable(due) and not due():
                continue
            started = self._monotonic()
            try:
                report.poll()
            except AdminApiError as exc:
                self._fail(report.name, exc.reason, str(exc), started)
            except LedgerError as exc:
                self._fail(report.name, "ledger", str(exc), started)
            except Exception as exc:  # a bug must not stop the other sources
                log.exception("poll crashed", extra={"fields": {"source": report.name}})
                self._fail(report.name, "internal", type(exc).__name__, started)
            else:
                duration = self._monotonic() - started
                self._health.succeeded(report.name, at=self._clock(), duration=duration)
                log.debug(
                    "poll finished",
                    extra={"fields": {"source": report.name, "duration_s": round(duration, 3)}},
                )

    def _fail(self, name: str, reason: str, message: str, started: float) -> None:
        self._health.failed(name, reason=reason, duration=self._monotonic() - started)
        log.warning(
            "poll failed", extra={"fields": {"source": name, "reason": reason, "error": message}}
        )

    def run(self, stop: threading.Event) -> None:
        """Poll now and then every interval until ``stop`` is set."""
        while not stop.is_set():
            started = self._monotonic()
            self.poll_once()
            stop.wait(max(0.0, self._interval - (self._monotonic() - started)))
