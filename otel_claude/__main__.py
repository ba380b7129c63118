"""Run the command line: ``python -m otel_claude``."""

from otel_claude.cli import run

run()
