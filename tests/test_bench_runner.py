"""``python -m bench``: the table, the verdict and exit code, and scripts that fail to report.

No real benchmark runs here: the rows are synthetic and the scripts are tiny fakes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

import bench.__main__ as runner
from bench.rows import Row, read_rows, write_rows


def rows() -> list[Row]:
    return [
        Row(
            "report --json, 500 MB history: wall time",
            "0.41 s",
            "≤ 0.6\u00d7 peer",
            True,
            peer="0.82 s",
            ratio=0.5,
            note="median of 3",
        ),
        Row("warm restart | pipes", "0.70 s", "< 0.5 s", False, values={"warm_s": [0.7]}),
        Row("memory", "40 MiB", "≤ 0.5\u00d7 peer", None, note="ccusage not found"),
    ]


def test_table_has_every_row_with_its_result_and_notes() -> None:
    table = runner.render_table(rows())
    lines = table.splitlines()
    assert lines[0] == "| workload | otel-claude | peer | ratio | target | result |"
    assert lines[2] == (
        "| report --json, 500 MB history: wall time | 0.41 s | 0.82 s | 0.500\u00d7 "
        "| ≤ 0.6\u00d7 peer | pass |"
    )
    assert lines[3] == "| warm restart \\| pipes | 0.70 s | — | — | < 0.5 s | **FAIL** |"
    assert lines[4] == "| memory | 40 MiB | — | — | ≤ 0.5\u00d7 peer | not measured |"
    assert "- memory: ccusage not found" in lines
    assert "- report --json, 500 MB history: wall time: median of 3" in lines


def test_render_names_the_machine_and_labels_a_quick_run() -> None:
    info = {
        "cpu": "Test CPU",
        "cores": 2,
        "ram_gib": 24.0,
        "python": "3.11.7 (CPython)",
        "os": "Linux 6",
        "otel_claude": "0.1.0",
        "commit": "abc1234",
        "date": "2026-01-01T00:00:00+00:00",
    }
    text = runner.render(info, rows()[:1], quick=True)
    assert text.startswith("Machine: Test CPU, 2 cores, 24 GiB RAM; Python 3.11.7 (CPython)")
    assert "Quick smoke run" in text
    assert text.splitlines()[-1] == "ALL PASSED: 1 passed, 0 failed, 0 not measured"
    assert "Quick" not in runner.render(info, rows()[:1], quick=False)


@pytest.mark.parametrize(
    ("verdicts", "expected"),
    [
        ([True, True], True),
        ([True, False], False),
        ([True, None], False),  # not measured is not passed
        ([], False),  # nothing ran
    ],
)
def test_verdict(verdicts: list[bool | None], expected: bool) -> None:
    assert runner.all_passed([Row("w", "x", "t", v) for v in verdicts]) is expected


def test_summary_counts_each_kind() -> None:
    assert runner.summary_line(rows()) == "NOT ALL PASSED: 1 passed, 1 failed, 1 not measured"


def test_rows_round_trip(tmp_path: Path) -> None:
    write_rows(tmp_path / "rows.json", rows())
    assert read_rows(tmp_path / "rows.json") == rows()


def fake(tmp_path: Path, body: str) -> Path:
    """A script that takes ``--rows FILE`` (and anything else) and runs ``body``."""
    path = tmp_path / "fake.py"
    path.write_text(
        "import json, sys\n"
        "rows = sys.argv[sys.argv.index('--rows') + 1]\n"
        "args = sys.argv[1:]\n" + body
    )
    return path


ONE_ROW = (
    "json.dump([{'workload': 'w', 'ours': '1 s', 'target': '< 2 s', 'passed': True, "
    "'values': {'args': args}}], open(rows, 'w'))\n"
)


def test_collect_reads_the_rows_and_passes_the_options(tmp_path: Path) -> None:
    outcome = runner.collect("fake", fake(tmp_path, ONE_ROW), ["--quick"], timeout=60)
    assert outcome.returncode == 0
    [row] = outcome.rows
    assert (row.workload, row.passed) == ("w", True)
    assert row.values["args"][-1] == "--quick"


def test_a_missing_script_is_a_failed_row(tmp_path: Path) -> None:
    outcome = runner.collect("metrics_scrape", tmp_path / "nope.py", [], timeout=60)
    [row] = outcome.rows
    assert row.workload.startswith("metrics_scrape: missing")
    assert row.passed is False


def test_a_crash_is_a_failed_row(tmp_path: Path) -> None:
    outcome = runner.collect("fake", fake(tmp_path, "raise SystemExit(3)\n"), [], timeout=60)
    assert outcome.returncode == 3
    assert [(r.workload, r.passed) for r in outcome.rows] == [("fake: failed (exit 3)", False)]


def test_rows_written_before_a_failing_exit_are_kept(tmp_path: Path) -> None:
    outcome = runner.collect("fake", fake(tmp_path, ONE_ROW + "sys.exit(1)\n"), [], timeout=60)
    assert [r.workload for r in outcome.rows] == ["w", "fake: failed (exit 1)"]
    assert not runner.all_passed(outcome.rows)


def test_no_rows_and_garbage_rows_fail(tmp_path: Path) -> None:
    silent = runner.collect("fake", fake(tmp_path, "pass\n"), [], timeout=60)
    assert [r.workload for r in silent.rows] == ["fake: failed (no rows written)"]
    garbage = runner.collect("fake", fake(tmp_path, "open(rows, 'w').write('{')\n"), [], 60)
    assert garbage.rows[0].workload.startswith("fake: failed (unreadable rows")


def test_a_hanging_script_is_stopped(tmp_path: Path) -> None:
    hang = fake(tmp_path, "import time\ntime.sleep(60)\n")
    outcome = runner.collect("fake", hang, [], timeout=0.5)
    assert outcome.returncode is None
    assert outcome.rows[0].workload == "fake: failed (timed out after 0 s)"
    assert outcome.seconds < 30


def test_quick_and_size_options() -> None:
    transcripts = runner.Script("transcripts", ("--serve",))
    assert runner.script_args(transcripts, quick=True, size=None) == ["--serve", "--quick"]
    assert runner.script_args(transcripts, quick=True, size=200) == ["--serve", "--size", "200"]
    ingest = runner.Script("ingest_http")
    assert runner.script_args(ingest, quick=True, size=200) == ["--quick"]
    assert runner.script_args(ingest, quick=False, size=None) == []


def test_main_writes_the_json_and_exits_by_the_verdict(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    good = tmp_path / "good"
    good.mkdir()
    monkeypatch.setattr(runner, "BENCH", good)
    monkeypatch.setattr(runner, "SCRIPTS", (runner.Script("ok"), runner.Script("gone")))
    fake(good, ONE_ROW).rename(good / "ok.py")
    out = tmp_path / "results.json"
    assert runner.main(["--out", str(out), "--only", "ok"]) == 0
    document = json.loads(out.read_text())
    assert document["passed"] is True
    assert document["machine"]["python"].startswith(sys.version.split()[0])
    assert [r["workload"] for r in document["rows"]] == ["w"]
    assert "| w | 1 s | — | — | < 2 s | pass |" in capsys.readouterr().out

    assert runner.main(["--out", str(out)]) == 1  # "gone" is missing
    assert json.loads(out.read_text())["rows"][-1]["workload"].startswith("gone: missing")
    with pytest.raises(SystemExit):
        runner.main(["--only", "nonesuch"])
