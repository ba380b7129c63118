"""otel-claude: exact Claude usage, prompt-cache and cost metrics for Prometheus and OTLP."""

__version__ = "0.1.0"
