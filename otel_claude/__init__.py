"""otel-claude: exact Claude usage, prompt-cache and cost metrics for Prometheus and OTLP."""

__version__ = "0.1.0"

from otel_claude.tracker import UsageTracker, default_tracker, track

__all__ = ["UsageTracker", "__version__", "default_tracker", "track"]
