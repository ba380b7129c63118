"""Run the command line: ``python -m otel_claude``."""

from otel_claude.cli import main

raise SystemExit(main())
