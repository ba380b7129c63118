"""The exception tree: every error otel-claude raises on purpose derives from one base.

    OtelClaudeError
     ├── ConfigError       a setting is wrong; carries every problem found, by setting name
     ├── PricingError      the price table or a price override is invalid
     ├── LedgerError       the state database cannot be opened or written
     ├── WorkerError       a scan worker process died before it finished its share
     └── IngestError       a whole request body is unusable (one bad message is not an error)

Bad individual messages are not exceptions: normalizers return a ``Rejected`` value so that
one bad line never costs the good lines beside it.
"""

from __future__ import annotations

from dataclasses import dataclass


class OtelClaudeError(Exception):
    """Base of all errors raised deliberately by otel-claude."""


@dataclass(frozen=True)
class Problem:
    """One configuration problem, named by the setting that causes it."""

    setting: str
    message: str

    def __str__(self) -> str:
        return f"{self.setting}: {self.message}"


class ConfigError(OtelClaudeError):
    """Configuration is invalid; ``problems`` lists every problem, not just the first."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("; ".join(str(p) for p in problems))


class PricingError(OtelClaudeError, ValueError):
    """The price data (file or overrides) is invalid, or a lookup was malformed."""


class LedgerError(OtelClaudeError):
    """The SQLite ledger cannot be opened, migrated or written."""


class WorkerError(OtelClaudeError):
    """A forked scan worker died (the OOM killer, say) before sending all its results."""


class IngestError(OtelClaudeError):
    """A request body as a whole cannot be used (too large, unreadable, unauthorized)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        self.status = status
        self.reason = reason
        super().__init__(message)
