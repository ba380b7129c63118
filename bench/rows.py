"""The one result row every benchmark reports, so ``python -m bench`` can print one table.

A benchmark script run with ``--rows FILE`` writes its rows there as a JSON list; the runner
(``bench/__main__.py``) collects every script's rows into one table and one JSON document.
"""

from __future__ import annotations

import compileall
import json
import platform
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

TIMES = "\u00d7"  # the multiplication sign for ratios; escaped, as ruff flags it literally


@dataclass
class Row:
    """One workload: our figure, the peer's (measured in the same run) and the verdict."""

    workload: str
    ours: str  # formatted for the table, e.g. "0.41 s"
    target: str  # e.g. "≤ 0.6x peer" (with TIMES for the x), "< 0.5 s"
    passed: bool | None  # None: not measurable here (e.g. the peer is not installed)
    peer: str | None = None  # formatted peer figure, or None when there is no peer
    ratio: float | None = None  # ours / peer when a peer was measured
    note: str = ""  # e.g. "exact totals", or why the row could not pass
    values: dict[str, Any] = field(default_factory=dict)  # raw numbers for the JSON


def write_rows(path: str | Path, rows: Sequence[Row]) -> None:
    """Write ``rows`` to ``path`` as a JSON list (the ``--rows`` output of a script)."""
    Path(path).write_text(json.dumps([asdict(r) for r in rows], indent=2) + "\n")


def read_rows(path: str | Path) -> list[Row]:
    """The rows a script wrote with ``write_rows``."""
    return [Row(**item) for item in json.loads(Path(path).read_text())]


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (first core), for the machine line."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def compile_package() -> None:
    """Byte-compile ``otel_claude`` as ``pip install`` does, so timed processes start like
    an installed exporter even when ``PYTHONDONTWRITEBYTECODE`` is set (compiling the
    changed modules on every start adds 50 ms to each measured process)."""
    compileall.compile_dir(str(Path(__file__).resolve().parent.parent / "otel_claude"), quiet=1)
