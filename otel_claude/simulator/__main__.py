"""Entry point of ``python -m otel_claude.simulator``."""

from otel_claude.simulator.cli import main

raise SystemExit(main())
