"""Soak: steady ingest, scrapes and Admin API polling for minutes; nothing may drift.

One ``otel-claude serve`` takes NDJSON batches at a fixed rate (default 5,000 messages/s),
is scraped every second and polls the bundled Admin API simulator. Every minute (or every
``--report-every`` seconds) it prints: messages sent, errors, p99 POST latency and the
exporter's RSS. Pass/fail at the end: zero errors, exact totals against the generator's
ground truth, and RSS after warm-up flat within ``--rss-tolerance`` (default 10 %).

    python bench/soak.py                      # 10 minutes at 5,000 msg/s
    python bench/soak.py --seconds 20 --rate 2000 --report-every 5   # the CI version
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from otel_claude.simulator import Simulator  # noqa: E402
from tests.procs import free_port  # noqa: E402
from tests.streams import generate  # noqa: E402

KEY = "sk-ant-admin01-soak"
BATCH = 500


def rss_kib(pid: int) -> int:
    """Resident set size of ``pid`` in KiB (from /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def tokens(url: str) -> Counter[tuple[str, str]]:
    out: Counter[tuple[str, str]] = Counter()
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=10).text):
        if family.name == "claude_agent_tokens":
            for s in family.samples:
                if s.labels.get("source") == "ingest":
                    out[(s.labels["model"], s.labels["token_type"])] += int(s.value)
    return out


def run(seconds: float, rate: int, report_every: float, rss_tolerance: float) -> dict[str, object]:
    """Run the soak; return the per-interval rows and the verdict."""
    # Workload: unique generated streams, enough for the whole run.
    needed = int(seconds * rate) + BATCH
    lines: list[bytes] = []
    truth_tokens: Counter[tuple[str, str]] = Counter()
    seed = 50_000
    while len(lines) < needed:
        chunk, truth = generate(seed=seed, sessions=200, garbage=False)
        lines += chunk
        truth_tokens.update(truth.tokens)
        seed += 1
    work = Path(tempfile.mkdtemp(prefix="otel-soak-"))
    port = free_port()
    with Simulator(api_key=KEY) as sim:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "ANTHROPIC_"))}
        env.update(
            ANTHROPIC_ADMIN_API_KEY=KEY,
            OTEL_CLAUDE_ADMIN_API_URL=sim.url,
            OTEL_CLAUDE_POLL_INTERVAL="2",
            OTEL_CLAUDE_TRANSCRIPTS="off",
        )
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "otel_claude",
                "serve",
                "--listen",
                f"127.0.0.1:{port}",
                "--state-dir",
                str(work / "state"),
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit("exporter not ready")
                time.sleep(0.05)
            stop = threading.Event()
            scrape_errors = [0]

            def scraper() -> None:
                with httpx.Client(timeout=10) as client:
                    while not stop.wait(1.0):
                        try:
                            if client.get(f"{url}/metrics").status_code != 200:
                                scrape_errors[0] += 1
                        except httpx.HTTPError:
                            scrape_errors[0] += 1

            threading.Thread(target=scraper, daemon=True).start()
            rows: list[dict[str, float]] = []
            latencies: list[float] = []
            sent = errors = 0
            began = time.monotonic()
            next_report = began + report_every
            position = 0
            with httpx.Client(timeout=30) as client:
                while time.monotonic() - began < seconds:
                    due = int((time.monotonic() - began) * rate)
                    while position + BATCH <= min(due, len(lines)):
                        body = b"\n".join(lines[position : position + BATCH])
                        t0 = time.monotonic()
                        try:
                            answer = client.post(f"{url}/v1/events", content=body)
                            ok = answer.status_code == 202
                        except httpx.HTTPError:
                            ok = False
                        latencies.append(time.monotonic() - t0)
                        if ok:
                            position += BATCH
                            sent += BATCH
                        else:
                            errors += 1  # re-sent on the next turn: dedup keeps it exact
                    now = time.monotonic()
                    if now >= next_report:
                        rows.append(
                            {
                                "t": round(now - began, 1),
                                "sent": sent,
                                "errors": errors,
                                "p99_ms": round(
                                    1000 * statistics.quantiles(latencies, n=100)[98], 2
                                )
                                if len(latencies) >= 2
                                else 0.0,
                                "rss_mib": round(rss_kib(proc.pid) / 1024, 1),
                            }
                        )
                        print(json.dumps(rows[-1]), flush=True)
                        latencies = []
                        next_report += report_every
                    time.sleep(0.01)
            stop.set()
            exact = tokens(url) == +Counter({k: v for k, v in _truth_for(lines[:position]).items()})
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    warm = [r["rss_mib"] for r in rows[len(rows) // 3 :]] or [0.0]
    flat = (max(warm) - min(warm)) <= rss_tolerance * max(min(warm), 1.0)
    verdict = {
        "rows": rows,
        "errors": errors,
        "scrape_errors": scrape_errors[0],
        "exact": exact,
        "rss_flat": flat,
        "rate": rate,
        "seconds": seconds,
    }
    verdict["pass"] = errors == 0 and scrape_errors[0] == 0 and exact and flat
    return verdict


def _truth_for(sent: list[bytes]) -> Counter[tuple[str, str]]:
    """Ground truth of exactly the lines that were acknowledged, computed independently."""
    steps: dict[str, tuple[str, list[int]]] = {}
    models = {
        "claude-sonnet-4-5-20250929": "claude-sonnet-4-5",
        "claude-haiku-4-5-20251001": "claude-haiku-4-5",
    }
    results: dict[str, dict[str, list[int]]] = {}
    order: list[tuple[str, str]] = []
    for raw in sent:
        doc = json.loads(raw)
        kind = doc.get("type")
        if kind == "assistant":
            msg = doc["message"]
            u = msg["usage"]
            cc = u["cache_creation"]
            values = [
                u["input_tokens"],
                u["output_tokens"],
                u["cache_read_input_tokens"],
                cc["ephemeral_5m_input_tokens"],
                cc["ephemeral_1h_input_tokens"],
            ]
            known = steps.get(msg["id"])
            if known is None:
                steps[msg["id"]] = (models[msg["model"]], values)
                order.append(("step", msg["id"]))
            else:
                known[1][:] = [max(a, b) for a, b in zip(known[1], values, strict=True)]
        elif kind == "result":
            order.append(("result", doc["uuid"]))
            results[doc["uuid"]] = {
                m: [
                    e["inputTokens"],
                    e["outputTokens"],
                    e["cacheReadInputTokens"],
                    e["cacheCreationInputTokens"],
                ]
                for m, e in doc["modelUsage"].items()
            }
        elif kind == "system":
            order.append(("init", doc["uuid"]))
    # Per call (init .. result): max(result, sum of steps) per model and type.
    out: Counter[tuple[str, str]] = Counter()
    call: dict[str, list[int]] = {}

    def close(result: dict[str, list[int]] | None) -> None:
        names = set(call) | set(normalize(m) for m in (result or {}))
        for model in names:
            s = call.get(model, [0] * 5)
            r = [0] * 4
            for raw_model, v in (result or {}).items():
                if normalize(raw_model) == model:
                    r = [a + b for a, b in zip(r, v, strict=True)]
            out[(model, "input")] += max(s[0], r[0])
            out[(model, "output")] += max(s[1], r[1])
            out[(model, "cache_read")] += max(s[2], r[2])
            total_cc = max(s[3] + s[4], r[3])
            out[(model, "cache_creation_1h")] += s[4]
            out[(model, "cache_creation_5m")] += total_cc - s[4]
        call.clear()

    for kind, key in order:
        if kind == "init":
            if call:
                close(None)
        elif kind == "step":
            model, values = steps[key]
            acc = call.setdefault(model, [0] * 5)
            acc[:] = [a + b for a, b in zip(acc, values, strict=True)]
        else:
            close(results[key])
    if call:
        close(None)
    return out


def normalize(model: str) -> str:
    """Model ids as the generator writes them, to the exporter's labels."""
    for prefix in ("us.anthropic.", "anthropic."):
        model = model.removeprefix(prefix)
    model = model.split("@", 1)[0].removesuffix("-v1:0")
    return (
        model[: -len("-20250929")]
        if model.endswith("-20250929")
        else (model[: -len("-20251001")] if model.endswith("-20251001") else model)
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--rate", type=int, default=5000)
    parser.add_argument("--report-every", type=float, default=60.0)
    parser.add_argument("--rss-tolerance", type=float, default=0.10)
    args = parser.parse_args()
    verdict = run(args.seconds, args.rate, args.report_every, args.rss_tolerance)
    print("| t (s) | messages sent | errors | p99 POST (ms) | RSS (MiB) |")
    print("|---:|---:|---:|---:|---:|")
    for row in verdict["rows"]:  # type: ignore[attr-defined]
        print(
            f"| {row['t']} | {row['sent']:,} | {row['errors']} | {row['p99_ms']} | "
            f"{row['rss_mib']} |"
        )
    print(
        f"\nexact totals: {verdict['exact']}; scrape errors: {verdict['scrape_errors']}; "
        f"RSS flat after warm-up: {verdict['rss_flat']}; PASS: {verdict['pass']}"
    )
    return 0 if verdict["pass"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
