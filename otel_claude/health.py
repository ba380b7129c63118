"""Per-source health: readiness, up/down, last success, poll duration and errors.

Sources report here; ``/readyz``, the landing page and the ``otel_claude_source_*``
self-metrics read it. Process-local on purpose: health describes this process.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field, replace


@dataclass(frozen=True)
class SourceState:
    """What is known about one source."""

    ready: bool = False  # first scan / poll finished (successfully or not)
    up: bool = True
    last_success: float | None = None
    last_duration: float | None = None
    last_error: str | None = None
    polls: int = 0
    errors: Counter[str] = field(default_factory=Counter)


class SourceHealth:
    """Thread-safe registry of source states."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._states: dict[str, SourceState] = {}

    def enable(self, name: str, *, ready: bool = False) -> None:
        """Register a source; it blocks readiness until its first pass unless ``ready``."""
        with self._lock:
            self._states[name] = SourceState(ready=ready)

    def succeeded(self, name: str, *, at: float, duration: float) -> None:
        """Record a successful pass."""
        with self._lock:
            state = self._states.get(name, SourceState())
            self._states[name] = replace(
                state,
                ready=True,
                up=True,
                last_success=at,
                last_duration=duration,
                last_error=None,
                polls=state.polls + 1,
            )

    def failed(self, name: str, *, reason: str, duration: float) -> None:
        """Record a failed pass: the source keeps serving its last good totals."""
        with self._lock:
            state = self._states.get(name, SourceState())
            errors = Counter(state.errors)
            errors[reason] += 1
            self._states[name] = replace(
                state,
                ready=True,
                up=False,
                last_duration=duration,
                last_error=reason,
                polls=state.polls + 1,
                errors=errors,
            )

    def states(self) -> dict[str, SourceState]:
        """A copy of every source's state."""
        with self._lock:
            return dict(self._states)

    def up(self) -> dict[str, bool]:
        """Per-source health for ``otel_claude_source_up``."""
        return {name: s.up for name, s in self.states().items()}

    def not_ready(self) -> list[str]:
        """Sources whose first pass has not finished."""
        return sorted(name for name, s in self.states().items() if not s.ready)
