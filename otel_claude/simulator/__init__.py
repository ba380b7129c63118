"""A simulator of the Anthropic Admin API for tests and ``otel-claude demo``.

:class:`Simulator` is a real HTTP server on loopback that serves the usage
report, the cost report, Claude Code analytics and the workspace and API-key
lists with the documented parameters, limits, pagination, error shapes, 429s
with ``retry-after``, late data and revisions.  Its numbers are a pure function
of a seed and the clock, and the ``*_truth`` methods return exactly what the
API serves (or will serve) so tests can assert exact totals.

Run it standalone with ``python -m otel_claude.simulator --port 8099 --seed 1``.
"""

from otel_claude.simulator.cli import main
from otel_claude.simulator.server import DEFAULT_API_KEY, RequestRecord, Simulator
from otel_claude.simulator.world import USAGE_DIMENSIONS, USAGE_FIELDS

__all__ = [
    "DEFAULT_API_KEY",
    "USAGE_DIMENSIONS",
    "USAGE_FIELDS",
    "RequestRecord",
    "Simulator",
    "main",
]
