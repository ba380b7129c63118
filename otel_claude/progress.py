"""A one-line progress bar on a terminal; silent when the output is piped or redirected."""

from __future__ import annotations

import sys
from typing import TextIO


class Progress:
    """Counts steps of a long operation and redraws one line on stderr when it is a TTY."""

    def __init__(self, total: int, stream: TextIO | None = None) -> None:
        self._total = max(1, total)
        self._done = 0
        self._stream = stream if stream is not None else sys.stderr
        self._tty = self._stream.isatty()

    def step(self, label: str = "", amount: int = 1) -> None:
        """Advance by ``amount``."""
        self._done = min(self._done + amount, self._total)
        if self._tty:
            width = 30
            filled = width * self._done // self._total
            self._stream.write(
                f"\r[{'#' * filled}{'.' * (width - filled)}] {self._done}/{self._total} {label:<24}"
            )
            self._stream.flush()

    def finish(self) -> None:
        """End the bar's line."""
        if self._tty:
            self._stream.write("\n")
            self._stream.flush()
