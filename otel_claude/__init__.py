"""otel-claude: exact Claude usage, prompt-cache and cost metrics for Prometheus and OTLP."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from otel_claude.tracker import UsageTracker, default_tracker, track

__all__ = ["UsageTracker", "__version__", "default_tracker", "track"]


def __getattr__(name: str) -> Any:
    """Import the Python API (and OpenTelemetry) only when it is used: the CLI's report
    command should not pay for it."""
    if name in ("UsageTracker", "default_tracker", "track"):
        from otel_claude import tracker

        return getattr(tracker, name)
    raise AttributeError(f"module 'otel_claude' has no attribute {name!r}")
