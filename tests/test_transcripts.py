"""Transcripts: discovery, exact counting with every trap, live tailing, crash safety, report."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from otel_claude.ledger import TOKENS, Ledger
from otel_claude.pricing import PriceTable
from otel_claude.records import Rejected, StepRecord
from otel_claude.sources.messages import Limits
from otel_claude.sources.tailer import TranscriptTailer
from otel_claude.sources.transcripts import LineStats, parse_lines, projects_dirs
from tests.procs import child_pids, running_exporter

ROOT = Path(__file__).resolve().parent.parent


def assistant(
    mid: str,
    *,
    inp: int = 3,
    out: int = 10,
    read: int = 0,
    c5: int = 0,
    c1: int = 0,
    model: str = "claude-sonnet-4-5-20250929",
    session: str = "s1",
    ts: str = "2026-11-01T10:00:00.000Z",
    request: str | None = None,
    sidechain: bool = False,
    **extra: object,
) -> bytes:
    doc = {
        "parentUuid": None,
        "isSidechain": sidechain,
        "userType": "external",
        "cwd": "/w",
        "sessionId": session,
        "version": "2.1.114",
        "message": {
            "id": mid,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": "text", "text": "ok"}],
            "stop_reason": None,
            "usage": {
                "input_tokens": inp,
                "cache_creation_input_tokens": c5 + c1,
                "cache_read_input_tokens": read,
                "cache_creation": {
                    "ephemeral_5m_input_tokens": c5,
                    "ephemeral_1h_input_tokens": c1,
                },
                "output_tokens": out,
                "service_tier": "standard",
            },
        },
        "requestId": request or f"req_{mid}",
        "type": "assistant",
        "uuid": f"u-{mid}-{out}",
        "timestamp": ts,
        **extra,
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def user(text: str = "hi", session: str = "s1") -> bytes:
    return json.dumps(
        {
            "type": "user",
            "sessionId": session,
            "message": {"role": "user", "content": text},
            "uuid": "u",
            "timestamp": "2026-11-01T09:59:00Z",
        },
        separators=(",", ":"),
    ).encode()


def tokens(ledger: Ledger) -> dict[tuple[str, str], int]:
    out: Counter[tuple[str, str]] = Counter()
    for (family, labels), value in ledger.snapshot().items():
        if family == TOKENS and value:
            out[(labels[0], labels[1])] += value
    return dict(out)


def _report(config_dir: Path, *args: str, **env: str) -> str:
    """The output of ``otel-claude report ARGS`` over ``config_dir``, run as a user would,
    with none of this shell's OTEL_/CLAUDE_ settings (``env`` adds some)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "CLAUDE_"))}
    run = subprocess.run(
        [sys.executable, "-m", "otel_claude", "report", *args],
        env={**clean, "CLAUDE_CONFIG_DIR": str(config_dir), **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return run.stdout


def project(root: Path, name: str = "-w-acme") -> Path:
    path = root / "projects" / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def test_discovery(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b" / "projects"
    assert projects_dirs({"CLAUDE_CONFIG_DIR": f"{a}, {b}"}) == [a / "projects", b]
    assert projects_dirs({}, home=tmp_path) == [
        tmp_path / ".claude" / "projects",
        tmp_path / ".config" / "claude" / "projects",
    ]


@pytest.mark.parametrize("workers", [1, 2])
def test_every_trap_counts_exactly(
    make_ledger: Callable[..., Ledger], tmp_path: Path, workers: int
) -> None:
    proj = project(tmp_path)
    (proj / "s1.jsonl").write_bytes(
        b"\n".join(
            [
                user(),
                assistant("m1", out=1, read=100, c5=40),  # streaming: partial output
                assistant("m1", out=50, read=100, c5=40),  # same id, final output
                b"",  # blank
                b"not json at all",  # garbage
                b"[1,2]",  # not an object
                assistant("syn", model="<synthetic>", inp=999, out=999),
                assistant("err", inp=777, out=777, isApiErrorMessage=True),
                assistant("m2", inp=5, out=7, c1=300),  # 1h cache write
            ]
        )
        + b"\n"
    )
    # A resumed session copies old lines into a new file; a sidechain replays m2 under a
    # new request id; a subagent file adds its own step; CRLF line endings.
    sub = proj / "s2" / "subagents"
    sub.mkdir(parents=True)
    (proj / "s2.jsonl").write_bytes(
        b"\r\n".join(
            [
                assistant("m1", out=50, read=100, c5=40),
                assistant("m2", inp=5, out=7, c1=300, request="req_other", sidechain=True),
                assistant("m3", inp=1, out=2, model="claude-haiku-4-5-20251001", session="s2"),
            ]
        )
        + b"\r\n"
    )
    (sub / "agent-a1.jsonl").write_bytes(
        assistant("m4", inp=11, out=13, model="claude-haiku-4-5-20251001", session="s2")
        + b"\n"
        + b'{"type":"assistant","message":{"id":"msg_bad\xff","model":"x","usage":{}}}\n'
        + assistant("m5", inp=1000, out=1000)[:60]
    )  # torn: still being written
    ledger = make_ledger()
    # workers=2 with no size threshold: the cold scan is parsed in worker processes.
    tailer = TranscriptTailer(ledger, [tmp_path / "projects"], workers=workers, parallel_bytes=0)
    tailer.scan()
    # A parallel scan of the empty ledger built the steps index only at its end.
    conn = sqlite3.connect(ledger.path)
    indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    conn.close()
    assert "steps_message" in indexes and ledger._staged is None
    sonnet, haiku = "claude-sonnet-4-5", "claude-haiku-4-5"
    assert tokens(ledger) == {
        (sonnet, "input"): 3 + 5,
        (sonnet, "output"): 50 + 7,
        (sonnet, "cache_read"): 100,
        (sonnet, "cache_creation_5m"): 40,
        (sonnet, "cache_creation_1h"): 300,
        (haiku, "input"): 1 + 11,
        (haiku, "output"): 2 + 13,
    }
    assert tailer.stats.rejected == {"invalid_json": 1, "not_an_object": 1, "invalid_utf8": 1}
    # The torn line completes: counted once, and nothing else twice.
    with (sub / "agent-a1.jsonl").open("ab") as f:
        f.write(assistant("m5", inp=1000, out=1000)[60:] + b"\n")
    tailer.scan()
    assert tokens(ledger)[(sonnet, "input")] == 8 + 1000
    assert tokens(ledger)[(sonnet, "output")] == 57 + 1000


def test_sdk_and_transcript_see_one_step_once(
    make_ledger: Callable[..., Ledger], tmp_path: Path
) -> None:
    ledger = make_ledger()
    ledger.apply(
        [
            StepRecord(
                message_id="m1",
                session_id="s1",
                model="claude-sonnet-4-5",
                source="sdk",
                input=3,
                output=50,
            )
        ],
        source="sdk",
    )
    (project(tmp_path) / "s1.jsonl").write_bytes(assistant("m1", out=50) + b"\n")
    TranscriptTailer(ledger, [tmp_path / "projects"]).scan()
    assert tokens(ledger) == {
        ("claude-sonnet-4-5", "input"): 3,
        ("claude-sonnet-4-5", "output"): 50,
    }


def test_truncate_replace_delete(make_ledger: Callable[..., Ledger], tmp_path: Path) -> None:
    proj = project(tmp_path)
    path = proj / "s1.jsonl"
    path.write_bytes(assistant("m1", out=10) + b"\n" + assistant("m2", out=20) + b"\n")
    ledger = make_ledger()
    tailer = TranscriptTailer(ledger, [tmp_path / "projects"])
    tailer.scan()
    path.write_bytes(assistant("m3", out=30) + b"\n")  # truncated and rewritten (same inode)
    tailer.scan()
    replacement = proj / "s1.tmp"
    replacement.write_bytes(assistant("m1", out=10) + b"\n" + assistant("m4", out=40) + b"\n")
    os.replace(replacement, path)  # replaced: new inode, resumed copy of m1 plus m4
    tailer.scan()
    assert tokens(ledger)[("claude-sonnet-4-5", "output")] == 10 + 20 + 30 + 40
    path.unlink()
    tailer.scan()
    assert ledger.cursors("transcript:") == {}


def test_restart_resumes_from_committed_positions(
    make_ledger: Callable[..., Ledger], tmp_path: Path
) -> None:
    path = project(tmp_path) / "s1.jsonl"
    path.write_bytes(assistant("m1", out=10) + b"\n")
    first = make_ledger()
    TranscriptTailer(first, [tmp_path / "projects"]).scan()
    first.close()
    with path.open("ab") as f:
        f.write(assistant("m2", out=20) + b"\n")
    again = make_ledger()
    tailer = TranscriptTailer(again, [tmp_path / "projects"])
    tailer.scan()
    assert tokens(again)[("claude-sonnet-4-5", "output")] == 30
    assert tailer.stats.lines == 1  # only the new line was read


CRASH = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, {root!r})
    from otel_claude.ledger import Ledger
    from otel_claude.pricing import load_price_table
    from otel_claude.sources.tailer import TranscriptTailer
    commits = []
    def maybe_die():
        commits.append(1)
        if len(commits) == 3:
            os.kill(os.getpid(), signal.SIGKILL)
    ledger = Ledger({db!r}, prices=load_price_table(), before_commit=maybe_die)
    TranscriptTailer(ledger, [{root_dir!r}], batch_records=7).scan()
""")


def test_kill_9_mid_scan_neither_loses_nor_repeats(
    make_ledger: Callable[..., Ledger], tmp_path: Path
) -> None:
    proj = project(tmp_path)
    expected_out = 0
    for f in range(4):
        lines = []
        for i in range(10):
            mid = f"m{f}-{i}"
            lines += [assistant(mid, out=1), assistant(mid, out=i + 1)]
            expected_out += i + 1
        (proj / f"s{f}.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    db = tmp_path / "ledger.sqlite3"
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            CRASH.format(root=str(ROOT), db=str(db), root_dir=str(tmp_path / "projects")),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    ledger = make_ledger()
    partial = tokens(ledger).get(("claude-sonnet-4-5", "output"), 0)
    assert 0 < partial < expected_out  # two batches were committed before the kill
    TranscriptTailer(ledger, [tmp_path / "projects"]).scan()
    assert tokens(ledger)[("claude-sonnet-4-5", "output")] == expected_out
    assert tokens(ledger)[("claude-sonnet-4-5", "input")] == 3 * 40


def _metric(url: str, name: str) -> float:
    total = 0.0
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics").text):
        for sample in family.samples:
            if sample.name == name:
                total += sample.value
    return total


def test_serve_tails_live(tmp_path: Path) -> None:
    config = tmp_path / "claude"
    path = project(config) / "s1.jsonl"
    path.write_bytes(assistant("m1", out=10) + b"\n")
    env = {"CLAUDE_CONFIG_DIR": str(config), "OTEL_CLAUDE_TRANSCRIPTS": "on"}
    with running_exporter(tmp_path, env) as exporter:
        assert _metric(exporter.url, "claude_agent_tokens_total") == 13  # initial scan, ready
        with path.open("ab") as f:
            f.write(assistant("m2", out=20)[:50])  # torn: not counted yet
        time.sleep(0.5)
        with path.open("ab") as f:
            f.write(assistant("m2", out=20)[50:] + b"\n")
        deadline = time.monotonic() + 10
        while _metric(exporter.url, "claude_agent_tokens_total") < 36:
            assert time.monotonic() < deadline, "appended line never showed up"
            time.sleep(0.1)
        assert _metric(exporter.url, "claude_agent_tokens_total") == 36
        text = httpx.get(f"{exporter.url}/metrics").text
        assert (
            'source="transcript"' in text
            and 'otel_claude_source_up{source="transcripts"} 1.0' in text
        )


def test_report_json_and_table(tmp_path: Path) -> None:
    proj = project(tmp_path)
    (proj / "a.jsonl").write_bytes(
        b"\n".join(
            [
                assistant(
                    "m1", inp=1000, out=2000, read=10_000, c5=4000, ts="2026-10-30T23:00:00Z"
                ),
                assistant(
                    "m2",
                    inp=100,
                    out=200,
                    c1=1000,
                    model="claude-opus-4-6",
                    ts="2026-10-31T01:00:00Z",
                ),
                assistant(
                    "m3", inp=7, out=9, model="claude-future-9-20270101", ts="2026-11-01T01:00:00Z"
                ),
            ]
        )
        + b"\n"
    )
    doc = json.loads(_report(tmp_path, "--json"))
    sonnet = doc["models"]["claude-sonnet-4-5"]
    assert {
        k: sonnet[k]
        for k in ("input", "output", "cache_read", "cache_creation_5m", "cache_creation_1h")
    } == {
        "input": 1000,
        "output": 2000,
        "cache_read": 10_000,
        "cache_creation_5m": 4000,
        "cache_creation_1h": 0,
    }
    # $3 x 1000 + $15 x 2000 + $0.30 x 10,000 + $3.75 x 4000 per million tokens
    assert sonnet["cost_usd"] == 0.051
    assert doc["models"]["claude-opus-4-6"]["cost_usd"] == 0.0155  # 5x100 + 25x200 + 10x1000
    assert doc["unpriced_models"] == ["claude-future-9"]
    assert doc["totals"]["output"] == 2209
    assert sorted(doc["days"]) == ["2026-10-30", "2026-10-31", "2026-11-01"]
    assert doc["days"]["2026-10-31"]["models"]["claude-opus-4-6"]["cache_creation_1h"] == 1000
    since = _report(tmp_path, "--json", "--since", "2026-10-31")
    assert json.loads(since)["totals"]["output"] == 209
    table = _report(tmp_path, "--by", "month")
    assert "2026-10" in table and "claude-opus-4-6" in table
    assert "no price for: claude-future-9" in table


def test_parallel_scan_equals_single(tmp_path: Path, prices: PriceTable) -> None:
    from otel_claude import report

    proj = project(tmp_path)
    for f in range(12):
        lines = [user("x" * 5000)]
        for i in range(30):
            mid = f"m{i % 17}-{f % 2}"  # the same ids across files: merged by the max rule
            # Each file on its own day: a merged step keeps the earliest, so it can leave
            # the day (summary group) a child first counted it in.
            ts = f"2026-11-{20 - f:02d}T10:00:00.000Z"
            lines.append(assistant(mid, out=i + f, read=i * 10, c1=f, ts=ts))
        lines.append(assistant(f"own-{f}", out=1000 + f, ts=f"2026-10-{f + 1:02d}T01:00:00Z"))
        (proj / f"s{f}.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    single = report.scan_history([tmp_path / "projects"])
    assert len(single.steps) == 34 + 12 and not single.groups
    want = report.summarize(single, prices)
    for workers in (2, 3):
        kept = report.scan_history(
            [tmp_path / "projects"], workers=workers, parallel_bytes=0, keep_steps=True
        )
        assert single.steps == kept.steps and not kept.groups
        grouped = report.scan_history([tmp_path / "projects"], workers=workers, parallel_bytes=0)
        assert grouped.step_count == 46
        assert report.summarize(grouped, prices) == want
        for other in (kept, grouped):
            assert single.stats.lines == other.stats.lines and single.files == other.files == 12
            assert single.stats.rejected == other.stats.rejected


def test_report_prices_long_context_and_limits_lines_as_configured(
    tmp_path: Path, prices: PriceTable
) -> None:
    """``report`` takes the long-context threshold from the price table, in one process and
    in several, and holds lines to the configured ``ingest.max_line_bytes`` as ``serve``
    does (a line over it is rejected, not counted)."""
    from dataclasses import replace

    from otel_claude import report

    proj = project(tmp_path)
    for f in range(4):
        lines = [assistant(f"m{f}", inp=1500, out=100, model="claude-opus-4-6")]
        (proj / f"s{f}.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    low = replace(prices, long_context_threshold_tokens=1000)
    # above 1,000 input-side tokens: $10 in and $37.50 out per million tokens
    want = 4 * (1500 * 10 + 100 * 37.5) / 1e6
    for workers in (1, 2):
        history = report.scan_history(
            [tmp_path / "projects"], workers=workers, parallel_bytes=0, long_context_tokens=1000
        )
        doc = report.summarize(history, low)
        assert doc["models"]["claude-opus-4-6"]["cost_usd"] == pytest.approx(want, abs=1e-12)
    usual = report.scan_history([tmp_path / "projects"], workers=2, parallel_bytes=0)
    assert report.summarize(usual, prices)["totals"]["cost_usd"] == pytest.approx(
        4 * (1500 * 5 + 100 * 25) / 1e6, abs=1e-12
    )
    with pytest.raises(ValueError, match="long-context threshold"):
        report.summarize(usual, low)  # sums made with another threshold: refused

    assert len(assistant("m0", inp=1500, out=100, model="claude-opus-4-6")) < 800
    long = assistant("long", out=7, model="claude-opus-4-6", cwd="/w/" + "x" * 400)
    assert len(long) > 800
    (proj / "long.jsonl").write_bytes(long + b"\n")
    doc = json.loads(_report(tmp_path, "--json", OTEL_CLAUDE_INGEST_MAX_LINE_BYTES="800"))
    assert doc["scan"]["rejected"] == {"line_too_long": 1}
    assert doc["models"]["claude-opus-4-6"]["output"] == 400  # the long line's 7 are not in


def _dead_child(*_args: object) -> object:
    os._exit(3)  # a child killed mid-scan (the OOM killer, say)


def test_report_with_a_dead_child_fails_clearly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from otel_claude import report
    from otel_claude.errors import OtelClaudeError

    proj = project(tmp_path)
    for f in range(4):
        (proj / f"s{f}.jsonl").write_bytes(assistant(f"m{f}", out=1) + b"\n")
    monkeypatch.setattr(report, "_scan_part", _dead_child)  # forked children inherit it
    with pytest.raises(OtelClaudeError, match="scan worker process died"):
        report.scan_history([tmp_path / "projects"], workers=2, parallel_bytes=0)


def test_project_label_opt_in_and_allow_list(tmp_path: Path) -> None:
    from otel_claude.app import build_app
    from otel_claude.config import load_settings

    for name, out in (("-w-acme", 10), ("-w-secret", 20), ("-w-other", 40)):
        (project(tmp_path / "claude", name) / "s.jsonl").write_bytes(
            assistant(f"m{out}", out=out) + b"\n"
        )
    config = tmp_path / "c.toml"
    config.write_text('[transcripts]\nproject_label = ["-w-acme"]\n')

    def exposition(**env: str) -> str:
        settings = load_settings(
            env={
                "CLAUDE_CONFIG_DIR": str(tmp_path / "claude"),
                "OTEL_CLAUDE_STATE_DIR": str(tmp_path / env.pop("s")),
                **env,
            }
        )
        app = build_app(settings, {})
        assert app.tailer is not None
        app.tailer.scan()
        text = httpx_free_render(app)
        app.close()
        return text

    plain = exposition(s="a")
    assert "project=" not in plain  # off by default: no project label at all
    labelled = exposition(s="b", OTEL_CLAUDE_CONFIG=str(config))
    assert (
        'claude_agent_tokens_total{model="claude-sonnet-4-5",project="-w-acme",'
        'source="transcript",token_type="output"} 10.0'
    ) in labelled
    assert (
        'claude_agent_tokens_total{model="claude-sonnet-4-5",project="other",'
        'source="transcript",token_type="output"} 60.0'
    ) in labelled


def httpx_free_render(app: object) -> str:
    from prometheus_client import generate_latest

    return generate_latest(app.registry).decode()  # type: ignore[attr-defined]


def test_report_by_model_and_source_state(tmp_path: Path) -> None:
    (project(tmp_path) / "a.jsonl").write_bytes(
        assistant("m1", inp=10, out=20)
        + b"\n"
        + assistant("m2", inp=1, out=2, model="claude-opus-4-6")
        + b"\n"
    )
    doc = json.loads(_report(tmp_path, "--by", "model", "--json"))
    assert "days" not in doc and doc["totals"]["output"] == 22
    table = _report(tmp_path, "--by", "model")
    assert table.splitlines()[0].startswith("scope")
    assert "claude-opus-4-6" in table
    with pytest.raises(subprocess.CalledProcessError) as failed:
        _report(tmp_path, "--source", "state", "--state-dir", str(tmp_path / "none"))
    assert failed.value.returncode == 1 and "nothing counted yet" in failed.value.stderr


PARALLEL = """
import json, signal, sys
sys.path.insert(0, {root!r})
from pathlib import Path
from otel_claude.ledger import Ledger
from otel_claude.pricing import load_price_table
from otel_claude.sources.tailer import TranscriptTailer

# serve's own handler: SIGTERM only asks to stop. Workers must not inherit it, or
# stopping the pool would wait on them for ever.
signal.signal(signal.SIGTERM, lambda *_: None)
out = {{}}
for workers in (1, 2):
    ledger = Ledger(Path({tmp!r}) / f"w{{workers}}.sqlite3", prices=load_price_table())
    tailer = TranscriptTailer(ledger, [Path({projects!r})], workers=workers, parallel_bytes=0)
    tailer.scan()
    out[workers] = [
        sorted((f, list(l), v) for (f, l), v in ledger.snapshot().items()),
        ledger.cursors("transcript:"),
        [tailer.stats.lines, tailer.stats.skipped, tailer.stats.rejected],
    ]
print(json.dumps(out))
"""


def test_parallel_cold_scan_equals_serial_and_never_hangs(tmp_path: Path) -> None:
    """The cold scan in worker processes commits what one process commits (totals,
    positions, line statistics), and finishes under a SIGTERM handler like serve's."""
    from tests.history import generate_history

    truth = generate_history(tmp_path / "h", seed=9, target_bytes=3_000_000)
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            PARALLEL.format(
                root=str(ROOT), tmp=str(tmp_path), projects=str(tmp_path / "h" / "projects")
            ),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["1"] == out["2"]
    totals = {(tuple(labels), v) for f, labels, v in out["2"][0] if f == TOKENS}
    by_type: Counter[str] = Counter()
    for labels, v in totals:
        by_type[labels[1]] += v
    assert dict(by_type) == {t: n for t, n in truth.totals().items() if n}


_PARSE_PACKED = None


def _die_on_s2(args: Any) -> Any:
    """A worker killed (the OOM killer, say) when it comes to parse ``s2.jsonl``."""
    if args[0].path.endswith("s2.jsonl"):
        os._exit(3)
    assert _PARSE_PACKED is not None
    return _PARSE_PACKED(args)


def test_a_dead_worker_fails_the_scan_instead_of_hanging(
    make_ledger: Callable[..., Ledger], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from otel_claude.errors import WorkerError
    from otel_claude.sources import coldscan

    proj = project(tmp_path)
    for f in range(4):
        (proj / f"s{f}.jsonl").write_bytes(assistant(f"m{f}", out=f + 1) + b"\n")
    ledger = make_ledger()
    global _PARSE_PACKED
    _PARSE_PACKED = coldscan._parse_packed
    monkeypatch.setattr(coldscan, "_parse_packed", _die_on_s2)  # forked workers inherit it
    tailer = TranscriptTailer(ledger, [tmp_path / "projects"], workers=2, parallel_bytes=0)
    with pytest.raises(WorkerError, match="scan worker process died"):
        tailer.scan()
    monkeypatch.undo()
    tailer.scan()  # the next pass (serve retries) counts everything, and once
    assert tokens(ledger)[("claude-sonnet-4-5", "output")] == 1 + 2 + 3 + 4
    # A fresh exporter on the same ledger finds nothing left to count.
    again = TranscriptTailer(ledger, [tmp_path / "projects"], workers=2, parallel_bytes=0)
    again.scan()
    assert tokens(ledger)[("claude-sonnet-4-5", "output")] == 1 + 2 + 3 + 4


def test_cold_scan_started_early_is_committed_by_the_first_scan(
    make_ledger: Callable[..., Ledger], tmp_path: Path
) -> None:
    """``serve`` starts the workers before building the rest: the first scan commits their
    results exactly once, and a job never read is stopped by ``close()``."""
    before = child_pids()
    proj = project(tmp_path)
    for f in range(6):
        (proj / f"s{f}.jsonl").write_bytes(assistant(f"m{f}", out=f + 1) + b"\n")
    ledger = make_ledger()
    tailer = TranscriptTailer(ledger, [tmp_path / "projects"], workers=2, parallel_bytes=0)
    assert tailer.start_cold_scan()
    with (proj / "s0.jsonl").open("ab") as fh:  # written after the job was planned
        fh.write(assistant("late", out=100) + b"\n")
    tailer.scan()
    assert tokens(ledger)[("claude-sonnet-4-5", "output")] == 21 + 100
    assert not child_pids() - before

    unread = TranscriptTailer(
        make_ledger("other.sqlite3"), [tmp_path / "projects"], workers=2, parallel_bytes=0
    )
    assert unread.start_cold_scan()
    unread.close()
    deadline = time.monotonic() + 10
    while child_pids() - before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not child_pids() - before


def test_first_start_forks_before_the_ledger_exists(
    make_ledger: Callable[..., Ledger], tmp_path: Path
) -> None:
    """On a first start ``serve`` starts the workers before it opens the ledger: the tailer
    takes that job over and commits it once. With a ledger already there nothing starts
    early, and a tailer that has positions stops a job it is handed instead of using it."""
    before = child_pids()
    from otel_claude.cli import _start_first_scan
    from otel_claude.config import load_settings
    from otel_claude.sources.coldscan import plan_parse
    from otel_claude.sources.transcripts import SOURCE, transcript_entries, transcript_limits

    proj = project(tmp_path)
    for f in range(6):
        (proj / f"s{f}.jsonl").write_bytes(assistant(f"m{f}", out=f + 1) + b"\n")
    env = {"CLAUDE_CONFIG_DIR": str(tmp_path), "OTEL_CLAUDE_STATE_DIR": str(tmp_path / "state")}
    settings = load_settings(env=env)
    assert not settings.ledger_path.exists()
    roots = settings.transcript_roots
    # 6 small files are below the size worth forking for: nothing starts
    assert _start_first_scan(settings) is None
    # From offset 0 (offset None) files are measured only until the threshold is reached
    # (1 byte: the first file); the rest follow unmeasured, in the order they are listed.
    listed = [key for key, _ in transcript_entries(roots)]
    job = plan_parse(
        transcript_entries(roots), None, transcript_limits(), SOURCE, 2, parallel_bytes=1
    )
    assert job is not None and {t.offset for t in job.tasks} == {0}
    assert [t.key for t in job.tasks] == listed
    assert job.tasks[0].inode is not None and job.tasks[0].size > 0
    assert {(t.inode, t.size) for t in job.tasks[1:]} == {(None, 0)}
    ledger = make_ledger()
    tailer = TranscriptTailer(ledger, [tmp_path / "projects"], workers=2, parallel_bytes=0)
    assert tailer.start_cold_scan(job.start())
    tailer.scan()
    assert tokens(ledger)[("claude-sonnet-4-5", "output")] == 21
    assert not child_pids() - before

    # Positions known: a job planned from offset 0 would count the files again.
    again = plan_parse(
        transcript_entries(roots), lambda *_: 0, transcript_limits(), SOURCE, 2, parallel_bytes=0
    )
    assert again is not None
    restarted = TranscriptTailer(ledger, [tmp_path / "projects"], workers=2, parallel_bytes=0)
    assert not restarted.start_cold_scan(again.start())
    restarted.scan()
    assert tokens(ledger)[("claude-sonnet-4-5", "output")] == 21
    deadline = time.monotonic() + 10
    while child_pids() - before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not child_pids() - before
    settings.ledger_path.parent.mkdir(parents=True, exist_ok=True)
    settings.ledger_path.touch()
    assert _start_first_scan(settings) is None  # a ledger exists: build_app plans instead


ORPHAN = """
import sys, time
sys.path.insert(0, {root!r})
from otel_claude.sources.coldscan import FileTask, ParseJob
from otel_claude.sources.messages import DEFAULT_LIMITS

# A FIFO nobody writes to: opening it blocks, so the workers stay busy.
job = ParseJob([FileTask("a", {fifo!r}, 0, 0), FileTask("b", {fifo!r}, 0, 0)],
               DEFAULT_LIMITS, "transcript", 2).start()
print("started", flush=True)
time.sleep(60)
"""


def _children_of(pid: int) -> list[int]:
    found: list[int] = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as fh:
            found += [int(c) for c in fh.read().split()]
    return found


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as fh:
            return "zombie" not in fh.read()
    except FileNotFoundError:
        return False


def test_workers_die_with_a_killed_exporter(tmp_path: Path) -> None:
    """``kill -9`` of the exporter during a cold scan leaves no worker behind (they would
    wait for work for ever: their siblings hold the queue open)."""
    fifo = tmp_path / "fifo.jsonl"
    os.mkfifo(fifo)
    proc = subprocess.Popen(
        [sys.executable, "-c", ORPHAN.format(root=str(ROOT), fifo=str(fifo))],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "started"
        deadline = time.monotonic() + 10
        workers: list[int] = []
        while len(workers) < 2 and time.monotonic() < deadline:
            workers = _children_of(proc.pid)
            time.sleep(0.05)
        assert len(workers) == 2
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    deadline = time.monotonic() + 10
    while any(_alive(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(w) for w in workers)


def test_task_queue_hands_out_every_index_once_across_processes() -> None:
    """Forked processes taking from one TaskQueue get each index exactly once, also when a
    token stands for a run of indexes (more indexes than the pipe holds tokens)."""
    import multiprocessing

    from otel_claude.sources.coldscan import TaskQueue

    for count in (0, 1, 7, 5_000, 40_000):
        queue = TaskQueue(count)
        context = multiprocessing.get_context("fork")
        # One pipe per child: two writers of messages larger than PIPE_BUF on one pipe can
        # interleave their bytes (this test once failed that way).
        pipes = [context.Pipe(duplex=False) for _ in range(2)]

        def take(w: Any, q: TaskQueue = queue) -> None:
            w.send(list(q))

        children = [context.Process(target=take, args=(w,)) for _, w in pipes]
        for child in children:
            child.start()
        mine = list(queue)
        got = [r.recv() for r, _ in pipes]
        for child in children:
            child.join(10)
        queue.close()
        taken = mine + got[0] + got[1]
        assert sorted(taken) == list(range(count)), count


def test_user_lines_that_mention_usage_short_and_long() -> None:
    """A user line never counts. One of up to 2 kB that mentions ``"usage"`` is decoded: valid
    it is skipped, malformed it is rejected. A longer one is recognised from its head and
    skipped unread, malformed or not; its over-long twin is skipped too, not rejected."""
    short, long = (
        json.dumps(
            {"type": "user", "message": {"role": "user", "content": text}, "usage": {}},
            separators=(",", ":"),
        ).encode()
        for text in ("hi", "x" * 4000)
    )
    assert len(short) < 2048 < len(long)
    broken_short, broken_long = short[:-1] + b",}", long[:-1] + b",}"
    data = b"\n".join([short, broken_short, long, broken_long, assistant("msg_1")]) + b"\n"

    stats = LineStats()
    records = parse_lines(data, stats)
    assert [type(r) for r in records] == [Rejected, StepRecord]
    assert (stats.lines, stats.skipped, stats.rejected) == (5, 3, {"invalid_json": 1})

    tight = LineStats(limits=Limits(max_line_bytes=len(short) - 1))
    records = parse_lines(data, tight)  # every line is over the limit; user lines: skipped
    assert [type(r) for r in records] == [Rejected]  # the assistant line is too long
    assert (tight.skipped, tight.rejected) == (4, {"line_too_long": 1})


def test_transcript_lines_are_held_to_the_parser_depth_only() -> None:
    """``ingest.max_json_depth`` bounds network input; a transcript line nested 70 levels
    deep still counts, while one beyond the parser's own 1024 levels is rejected."""
    doc = json.loads(assistant("msg_deep", out=7))
    node = doc["message"]["content"][0]
    for _ in range(70):
        node["x"] = {}
        node = node["x"]
    deep = json.dumps(doc, separators=(",", ":")).encode()
    stats = LineStats()
    (record,) = parse_lines(deep + b"\n", stats)
    assert isinstance(record, StepRecord) and record.output == 7

    ingest = LineStats(limits=Limits())  # the ingest default: 64 levels
    (record,) = parse_lines(deep + b"\n", ingest)
    assert isinstance(record, Rejected) and record.reason == "too_deep"

    # 1,100 levels more: more than the parser takes (spliced in: json.dumps would recurse)
    deeper = deep.replace(b'"x":{}', b'"x":' + b'{"x":' * 1100 + b"{}" + b"}" * 1100, 1)
    (record,) = parse_lines(deeper + b"\n", LineStats())
    assert isinstance(record, Rejected) and record.reason == "too_deep"


def test_workers_that_cannot_all_be_forked_leave_nothing_behind(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The second fork fails (no more processes): the first worker is ended and reaped,
    and no pipe end stays open."""
    from otel_claude.sources import coldscan

    forks: list[int] = []
    real_fork = os.fork

    def fork() -> int:
        forks.append(1)
        if len(forks) == 2:
            raise BlockingIOError("fork: Resource temporarily unavailable")
        return real_fork()

    before, fds = child_pids(), set(os.listdir("/proc/self/fd"))
    monkeypatch.setattr(os, "fork", fork)
    with pytest.raises(BlockingIOError):
        coldscan.Workers(_sleep_forever, [None, None])
    monkeypatch.setattr(os, "fork", real_fork)
    assert len(forks) == 2
    assert not child_pids() - before
    assert set(os.listdir("/proc/self/fd")) == fds


def _sleep_forever(_arg: Any, _channel: Any) -> None:
    time.sleep(60)
