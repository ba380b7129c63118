"""Generate a realistic Claude Code transcript history together with its ground truth.

``generate_history(root)`` writes ``root/projects/<project-dir>/<session>.jsonl`` files and
subagent files ``root/projects/<project-dir>/<session>/subagents/agent-<id>.jsonl``, laid
out and spelled the way Claude Code writes them (compact JSON, one entry per line), so that
``CLAUDE_CONFIG_DIR=root`` points any transcript reader at it.

The expected totals are kept from the generator's own records while it writes (one record
per API message id, holding the final usage of that message) and priced with a table
written out by hand below: nothing here calls otel_claude code or parses the files back.

Bytes are dominated, as in real histories, by tool results (file contents, command output)
that Claude Code stores twice per line: in ``message.content`` and in ``toolUseResult``.
"""

from __future__ import annotations

import heapq
import json
import math
import random
import re
import time
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# USD per million tokens written out by hand from the pricing page, as picodollars per token
# (1 USD/MTok = 10**6 pico/token). Order: input, output, 5m write, 1h write, cache read.
PRICES_PICO: dict[str, tuple[int, int, int, int, int]] = {
    "claude-sonnet-4-5": (3_000_000, 15_000_000, 3_750_000, 6_000_000, 300_000),
    "claude-opus-4-6": (5_000_000, 25_000_000, 6_250_000, 10_000_000, 500_000),
    "claude-haiku-4-5": (1_000_000, 5_000_000, 1_250_000, 2_000_000, 100_000),
}
PRICED_TYPES = ("input", "output", "cache_creation_5m", "cache_creation_1h", "cache_read")
TOKEN_TYPES = ("input", "output", "cache_read", "cache_creation_5m", "cache_creation_1h")

SONNET = "claude-sonnet-4-5-20250929"
OPUS = "claude-opus-4-6"
HAIKU = "claude-haiku-4-5-20251001"
UNPRICED = "claude-future-9-20270101"
SYNTHETIC = "<synthetic>"

DEFAULT_START = datetime(2026, 10, 1, tzinfo=UTC)
LONG_CONTEXT_TOKENS = 200_000  # no generated step reaches it: no premium pricing applies
COMPACT_AT = 150_000  # context size at which a session "auto-compacts"
RESUME_COPY_MAX = 3_000_000  # bytes of an old session copied into a resumed one, at most
MB = 1_000_000

_DATE_SUFFIX = re.compile(r"-\d{8}$")
_NON_ALNUM = re.compile(r"[^A-Za-z0-9]")
_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), check_circular=False).encode

# Trap lines that are not JSON objects. Each is a whole line (the newline is added).
_GARBAGE: tuple[bytes, ...] = (
    b"this is not json",
    b"<<<<<<< HEAD",
    b"\x00" * 24,  # NUL run left behind by a crash on some file systems
    b'{"type":"user","message":{"role":"user","content":"oops"}}}',
    b"Error: EPIPE: broken pipe, write",
    b"{'type': 'assistant', 'message': {'usage': {'input_tokens': 5}}}",
)
_BAD_UTF8 = b"caf\xe9 na\xefve \xff\xfe"  # Latin-1 bytes and stray bytes: not UTF-8
_MARK = "@@NOT-UTF8@@"


def normalize_model(model: str) -> str:
    """The model name the truth is keyed by: the id without its ``-YYYYMMDD`` suffix."""
    return _DATE_SUFFIX.sub("", model)


def project_dir_name(cwd: str) -> str:
    """Claude Code's project folder for a working directory (non-alphanumerics become ``-``)."""
    return _NON_ALNUM.sub("-", cwd)


@dataclass
class HistoryTruth:
    """What a correct reader of the generated history must count.

    A step is one API message id (``message.id``), counted once wherever and however often
    it appears: streaming lines of one response (one per content block, ``output_tokens``
    growing), copies in resumed sessions and sidechain replays under a new ``requestId``.
    Per id the largest value of each usage field is the truth. The UTC day of a step is
    the day of its first line (every line of one id is written on the same UTC day).

    Never counted: ``"<synthetic>"`` model lines and ``isApiErrorMessage`` lines (even with
    non-zero usage), torn last lines, garbage lines, JSON array lines, and lines that are
    not valid UTF-8. One assistant line carries invalid UTF-8 inside its text: a strict
    decoder rejects the line, so its usage (whose message id appears nowhere else) is not
    in the truth; a reader that decodes leniently would count it (see ``trap_tokens``).
    """

    root: Path
    tokens: Counter[tuple[str, str]] = field(default_factory=Counter)  # (model, token_type)
    by_day: Counter[tuple[str, str, str]] = field(default_factory=Counter)  # (day, model, type)
    steps: Counter[str] = field(default_factory=Counter)  # unique message ids per model
    cost_pico: dict[str, int] = field(default_factory=dict)  # priced models only
    files: int = 0
    lines: int = 0  # physical lines in all files, including blank, trap and torn ones
    bytes: int = 0
    rejected_lines: Counter[str] = field(default_factory=Counter)  # torn/garbage/array/...
    ignored_lines: Counter[str] = field(default_factory=Counter)  # valid JSON, no usage
    blank_lines: int = 0
    assistant_lines: int = 0  # lines of counted message ids, duplicates included
    traps: Counter[str] = field(default_factory=Counter)  # how often each trap was planted
    # Usage carried by lines that must not count, per (trap kind, token_type): explains a
    # peer tool's difference (e.g. one that counts API error lines).
    trap_tokens: Counter[tuple[str, str]] = field(default_factory=Counter)
    trap_token_lines: Counter[str] = field(default_factory=Counter)  # lines behind trap_tokens
    generation_seconds: float = 0.0

    @property
    def projects_dir(self) -> Path:
        return self.root / "projects"

    def totals(self) -> dict[str, int]:
        """Tokens per token type over all models."""
        out = dict.fromkeys(TOKEN_TYPES, 0)
        for (_model, token_type), n in self.tokens.items():
            out[token_type] += n
        return out

    def day_totals(self) -> dict[str, dict[str, int]]:
        """Tokens per UTC day and token type over all models."""
        out: dict[str, dict[str, int]] = {}
        for (day, _model, token_type), n in self.by_day.items():
            out.setdefault(day, dict.fromkeys(TOKEN_TYPES, 0))[token_type] += n
        return out

    def cost_usd(self, model: str) -> float | None:
        """Estimated USD for one model (None when the model has no price)."""
        pico = self.cost_pico.get(model)
        return None if pico is None else pico / 10**12

    def total_cost_pico(self) -> int:
        return sum(self.cost_pico.values())

    def unpriced_models(self) -> list[str]:
        return sorted(m for m in self.steps if m not in PRICES_PICO)


# --- text ---------------------------------------------------------------------------

_IDENT = (
    "cache session ledger request handler config parser metric window budget retry token "
    "usage price report bucket offset cursor exporter registry client server state record "
    "result message model stream batch worker queue event span label value counter gauge"
).split()
_PROSE = (
    "I'll look at the failing test first.",
    "The retry loop never resets its backoff after a success, so the delay keeps growing.",
    "Let me check how the cache key is built before changing anything.",
    "This matches the stack trace: the cursor is read before the lock is taken.",
    "Je vérifie d'abord la configuration — le fichier a été modifié récemment.",
    "注意\uff1a缓存键在会话之间共享\uff0c这可能导致重复计数。",
    "Die Überprüfung ist fehlgeschlagen, weil der Zeitstempel in lokaler Zeit ist.",
    "Done: all 214 tests pass and the linter is clean \u2705",
    'The function returns "None" when the path does not exist; callers assume a list.',
    "There are two call sites; both pass the timeout in milliseconds, not seconds.",
)
_PROMPTS = (
    "fix the flaky test in tests/test_ledger.py",
    "why does the exporter double count after a restart?",
    "add a --since flag to the report command",
    "refactor the pricing table loader, keep behaviour identical",
    "can you explain what this regex does: ^(?:[a-z]+\\.)*[a-z]+$",
    "write a migration for the new `usage_events` table",
    "the CI job fails on Windows paths like C:\\Users\\dev\\app, look into it",
    "bump the dependencies and make sure nothing breaks",
    "ça ne marche toujours pas, regarde les logs",
    "请帮我把这个函数改成异步的",
)
_FILES = (
    "src/app/main.py",
    "src/app/ledger.py",
    "src/app/pricing.py",
    "tests/test_ledger.py",
    "web/src/components/UsageChart.tsx",
    "internal/store/sqlite.go",
    "README.md",
    "pyproject.toml",
    "deploy/helm/values.yaml",
    "scripts/release.sh",
)


def _text_pool(rng: random.Random, chars: int) -> str:
    """Realistic tool output (numbered source, logs, test runs, listings), ``\\n``-joined."""
    out: list[str] = []
    size = 0
    number = 1
    while size < chars:
        roll = rng.random()
        a, b = rng.choice(_IDENT), rng.choice(_IDENT)
        if roll < 0.45:  # the Read tool's `cat -n` style, with its arrow
            indent = " " * (4 * rng.randint(0, 3))
            code = rng.choice(
                (
                    f"def {a}_{b}(self, {b}: dict[str, int]) -> int:",
                    f'{a} = {b}.get("{a}", 0) + len({b}_list)',
                    f'if not {a}:\n{indent}    raise ValueError(f"bad {b}: {{{a}!r}}")',
                    f"return {{k: v for k, v in {a}.items() if v is not None}}",
                    f"const {a}{b.title()} = await fetch(`/api/v1/{a}/${{id}}`);",
                    f'path = "C:\\\\Users\\\\dev\\\\{a}\\\\{b}.py"',
                    f"# TODO(dev): {a} must not be reset when {b} changes",
                    f'\tfmt.Fprintf(w, "%s\\t%d\\n", {a}, {b})',
                )
            )
            line = f"{number:>6}\u2192{indent}{code}"
            number = number + 1 if rng.random() < 0.97 else 1
        elif roll < 0.7:
            line = (
                f"2026-10-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:"
                f"{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}.{rng.randint(0, 999):03d}Z "
                f"{rng.choice(('INFO', 'DEBUG', 'WARN', 'ERROR'))} [{a}] {b} "
                f"id={rng.getrandbits(48):012x} took={rng.randint(1, 900)}ms "
                f'path="/v1/{a}/{b}"'
            )
        elif roll < 0.85:
            line = rng.choice(
                (
                    f"tests/test_{a}.py::test_{b}_{rng.randint(1, 99)} PASSED"
                    f"{' ' * rng.randint(1, 20)}[{rng.randint(0, 100):>3}%]",
                    f"-rw-r--r--  1 dev dev {rng.randint(0, 99999):>6} Oct  {rng.randint(1, 9)} "
                    f"12:{rng.randint(10, 59)} {a}_{b}.py",
                    f"src/{a}/{b}.py:{rng.randint(1, 900)}:{rng.randint(1, 80)}: "
                    f"E501 line too long ({rng.randint(101, 140)} > 100)",
                    f"  {a}: {b}  # {rng.random():.6f}",
                )
            )
        else:
            line = rng.choice(_PROSE)
        out.append(line)
        size += len(line) + 1
    return "\n".join(out)


# --- generator ----------------------------------------------------------------------


@dataclass
class _Project:
    cwd: str
    path: Path
    branch: str


@dataclass
class _File:
    """One transcript file, buffered in memory and written in one call."""

    path: Path
    crlf: bool
    lines: list[bytes] = field(default_factory=list)
    clean: list[bytes] = field(default_factory=list)  # copied when resumed: no trap lines
    torn: bytes = b""


@dataclass
class _Thread:
    """A conversation being written: the main session or one subagent."""

    file: _File
    env: dict[str, Any]  # the fields every entry repeats, in Claude Code's order
    model: str
    cache: str  # "5m", "1h", "mixed" or "unsplit" (no cache_creation object)
    t: int  # ms since the epoch of the last line
    parent: str | None = None
    context: int = 0  # tokens already cached
    fresh: int = 0  # tokens added since the last API call (next call writes them)
    messages: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)


class _Generator:
    def __init__(
        self, root: Path, seed: int, target: int, traps: bool, start: datetime, days: int
    ) -> None:
        self.rng = random.Random(seed)
        self.root = root
        self.target = target
        self.traps = traps
        self.start_ms = int(start.timestamp() * 1000)
        self.end_ms = self.start_ms + days * 86_400_000
        self.size = 0  # bytes written or buffered so far
        self.truth = HistoryTruth(root=root)
        # message id -> [model, day, input, output, cache_read, 5m, 1h] (final values)
        self.records: dict[str, list[Any]] = {}
        self.used_ids: set[str] = set()
        self.pool = _text_pool(self.rng, 1_500_000)
        self.prose = " ".join(_PROSE * 40)
        self.projects = self._projects()
        self.last_session: tuple[_Project, str, list[bytes], int] | None = None
        self.schedule: list[tuple[float, int, str]] = []
        self._plan()

    # ids, time, text

    def _b58(self, n: int) -> str:
        return "".join(self.rng.choices(_B58, k=n))

    def _uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def _msg_id(self) -> str:
        while True:
            mid = "msg_01" + self._b58(22)
            if mid not in self.used_ids:
                self.used_ids.add(mid)
                return mid

    def _req_id(self) -> str:
        return "req_011C" + self._b58(18)

    @staticmethod
    def _iso(ms: int) -> str:
        sec, milli = divmod(ms, 1000)
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)) + f".{milli:03d}Z"

    @staticmethod
    def _day(ms: int) -> str:
        return time.strftime("%Y-%m-%d", time.gmtime(ms // 1000))

    def _text(self, low: int, high: int) -> str:
        """A slice of tool output, its length log-uniform in [low, high] characters."""
        n = int(math.exp(self.rng.uniform(math.log(low), math.log(high))))
        at = self.rng.randrange(len(self.pool) - n)
        return self.pool[at : at + n]

    def _sentences(self, low: int, high: int) -> str:
        n = self.rng.randint(low, high)
        at = self.rng.randrange(len(self.prose) - n)
        return self.prose[at : at + n]

    def _projects(self) -> list[_Project]:
        rng = self.rng
        names = (
            "acme-api web-app data.pipeline infra ml_experiments docs-site mobile-client "
            "billing-service auth cli-tools monorepo scratch dotfiles blog analytics "
            "search-indexer payments_v2 chat-bot edge.proxy"
        ).split()
        homes = ("/home/dev", "/Users/sam/src", "/home/dev/work", "/Users/sam/Code/github.com/acme")
        out = []
        for name in rng.sample(names, rng.randint(5, min(20, len(names)))):
            cwd = f"{rng.choice(homes)}/{name}"
            path = self.root / "projects" / project_dir_name(cwd)
            branch = rng.choice(("main", "main", "master", "feature/usage-export", "fix/retry", ""))
            out.append(_Project(cwd, path, branch))
        return out

    # trap schedule: each kind fires when the written size crosses its thresholds, so that
    # even a small history holds every trap several times

    def _plan(self) -> None:
        n = max(3, round(self.target / (25 * MB)))
        kinds = ["unsplit", "unpriced"]
        if self.traps:
            kinds += [
                "resume",
                "crlf",
                "torn",
                "garbage",
                "blank",
                "array",
                "synthetic",
                "api_error",
                "replay_subagent",
                "replay_inline",
            ]
        seq = 0
        for kind in kinds:
            for i in range(n):
                at = (i + 0.3 + 0.4 * self.rng.random()) / n * 0.85 * self.target
                self.schedule.append((at, seq, kind))
                seq += 1
        if self.traps:
            self.schedule.append((0.4 * self.target, seq, "bad_utf8_user"))
            self.schedule.append((0.6 * self.target, seq + 1, "bad_utf8_assistant"))
        heapq.heapify(self.schedule)

    def _due(self) -> Counter[str]:
        due: Counter[str] = Counter()
        while self.schedule and self.schedule[0][0] <= self.size:
            due[heapq.heappop(self.schedule)[2]] += 1
        return due

    # output

    def _add(self, f: _File, line: bytes, clean: bool = True) -> None:
        f.lines.append(line)
        if clean:
            f.clean.append(line)
        self.size += len(line) + (2 if f.crlf else 1)

    def _flush(self, f: _File) -> None:
        nl = b"\r\n" if f.crlf else b"\n"
        data = nl.join(f.lines) + nl + f.torn if f.lines else f.torn
        f.path.parent.mkdir(parents=True, exist_ok=True)
        with open(f.path, "wb") as out:
            out.write(data)
        self.size += len(f.torn)
        self.truth.files += 1
        self.truth.lines += len(f.lines) + (1 if f.torn else 0)
        self.truth.bytes += len(data)

    def _entry(self, th: _Thread, kind: str, body: dict[str, Any], ms: int) -> dict[str, Any]:
        """A user/assistant/system entry with the common fields, chained to the last one."""
        u = self._uuid()
        doc = {"parentUuid": th.parent, **th.env}
        if kind == "assistant":
            doc.update(body)
            doc["type"] = "assistant"
        else:
            doc["type"] = kind
            doc.update(body)
        doc["uuid"] = u
        doc["timestamp"] = self._iso(ms)
        th.parent = u
        return doc

    # entries

    def _user(self, th: _Thread, content: Any, extra: dict[str, Any] | None = None) -> None:
        th.t += self.rng.randint(200, 30_000)
        body: dict[str, Any] = {"message": {"role": "user", "content": content}}
        doc = self._entry(th, "user", body, th.t)
        if extra:
            doc.update(extra)
        self._add(th.file, _encode(doc).encode())

    def _system(self, th: _Thread, subtype: str, content: str) -> None:
        th.t += self.rng.randint(5, 900)
        body = {"subtype": subtype, "content": content, "isMeta": False, "level": "info"}
        doc = self._entry(th, "system", body, th.t)
        self._add(th.file, _encode(doc).encode())

    def _snapshot(self, th: _Thread) -> None:
        mid = self._uuid()
        doc = {
            "type": "file-history-snapshot",
            "messageId": mid,
            "snapshot": {
                "messageId": mid,
                "trackedFileBackups": {
                    p: {"backupFileName": f"{self.rng.getrandbits(64):016x}@v2", "version": 2}
                    for p in self.rng.sample(_FILES, self.rng.randint(0, 3))
                },
                "timestamp": self._iso(th.t),
            },
            "isSnapshotUpdate": False,
        }
        self._add(th.file, _encode(doc).encode())

    def _usage(self, th: _Thread, model: str) -> tuple[int, int, int, int]:
        """Input, cache read, 5m and 1h writes of the next call; updates the context."""
        rng = self.rng
        if th.context == 0:  # session start or after compaction: system prompt + summary
            read = rng.randint(0, 18_000) if rng.random() < 0.6 else 0
            write = rng.randint(8_000, 26_000)
        else:
            read = th.context
            write = min(th.fresh + rng.randint(5, 400), 30_000)
        inp = rng.randint(1, 12) if rng.random() < 0.95 else rng.randint(100, 3_000)
        th.context = read + write
        th.fresh = 0
        assert inp + read + write < LONG_CONTEXT_TOKENS
        if th.cache == "1h":
            return inp, read, 0, write
        if th.cache == "mixed":
            one_hour = rng.randint(0, write)
            return inp, read, write - one_hour, one_hour
        return inp, read, write, 0

    def _usage_doc(
        self, cache: str, inp: int, out: int, read: int, c5: int, c1: int
    ) -> dict[str, Any]:
        if cache == "unsplit":
            return {
                "input_tokens": inp,
                "cache_creation_input_tokens": c5 + c1,
                "cache_read_input_tokens": read,
                "output_tokens": out,
                "service_tier": "standard",
            }
        return {
            "input_tokens": inp,
            "cache_creation_input_tokens": c5 + c1,
            "cache_read_input_tokens": read,
            "cache_creation": {"ephemeral_5m_input_tokens": c5, "ephemeral_1h_input_tokens": c1},
            "output_tokens": out,
            "service_tier": "standard",
        }

    def _blocks(self, th: _Thread, model: str, final: bool) -> list[dict[str, Any]]:
        rng = self.rng
        blocks: list[dict[str, Any]] = []
        if model == OPUS and rng.random() < 0.35:
            blocks.append(
                {
                    "type": "thinking",
                    "thinking": self._sentences(200, 2_500),
                    "signature": self._b58(rng.randint(300, 700)),
                }
            )
        if final or rng.random() < 0.55:
            blocks.append({"type": "text", "text": self._sentences(60, 1_200)})
        if not final:
            for _ in range(1 if rng.random() < 0.85 else 2):
                blocks.append(self._tool_use(th))
        return blocks

    def _tool_use(self, th: _Thread) -> dict[str, Any]:
        rng = self.rng
        name = rng.choices(
            ("Read", "Bash", "Edit", "Grep", "Glob", "TodoWrite", "Task"),
            (34, 24, 13, 10, 6, 5, 8 if not th.env["isSidechain"] else 0),
        )[0]
        path = f"{th.env['cwd']}/{rng.choice(_FILES)}"
        args: dict[str, Any]
        if name == "Read":
            args = {"file_path": path}
        elif name == "Bash":
            cmd = rng.choice(("pytest -x -q", "git status", "ruff check .", "npm test", "ls -la"))
            args = {"command": cmd, "description": "Run " + cmd.split()[0]}
        elif name == "Edit":
            args = {
                "file_path": path,
                "old_string": self._text(80, 1_500),
                "new_string": self._text(80, 1_500),
            }
        elif name == "Grep":
            args = {"pattern": rng.choice(_IDENT), "path": th.env["cwd"], "output_mode": "content"}
        elif name == "Glob":
            args = {"pattern": "**/*." + rng.choice(("py", "ts", "go", "md"))}
        elif name == "TodoWrite":
            args = {
                "todos": [
                    {"content": rng.choice(_PROMPTS), "status": "pending", "activeForm": "Working"}
                    for _ in range(rng.randint(1, 5))
                ]
            }
        else:
            args = {
                "description": "Investigate " + rng.choice(_IDENT),
                "prompt": rng.choice(_PROMPTS),
                "subagent_type": rng.choice(("general-purpose", "Explore")),
            }
        return {"type": "tool_use", "id": "toolu_01" + self._b58(22), "name": name, "input": args}

    def _assistant(self, th: _Thread, model: str, final: bool) -> list[dict[str, Any]]:
        """One API response: a line per content block, same id, growing output_tokens."""
        rng = self.rng
        blocks = self._blocks(th, model, final)
        inp, read, c5, c1 = self._usage(th, model)
        out = rng.randint(20, 900) + sum(len(str(b)) // 5 for b in blocks)
        mid, rid = self._msg_id(), self._req_id()
        split = self.traps  # without traps, the whole response is one line
        parts = [[b] for b in blocks] if split else [blocks]
        start = th.t + rng.randint(1_500, 40_000)
        stamps = [start]
        for _ in parts[1:]:  # one line per content block, each a little later
            stamps.append(stamps[-1] + rng.randint(40, 900))
        if self._day(stamps[0]) != self._day(stamps[-1]):  # keep one id on one UTC day
            start = (stamps[-1] // 86_400_000) * 86_400_000 + rng.randint(1, 999)
            stamps = [start + i * 50 for i in range(len(parts))]
        th.t = stamps[-1]
        message: dict[str, Any] = {}
        for i, content in enumerate(parts):
            last = i == len(parts) - 1
            grown = out if last else max(1, out * (i + 1) // (len(parts) + 1))
            message = {
                "id": mid,
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": content,
                "stop_reason": ("end_turn" if final else "tool_use") if last else None,
                "stop_sequence": None,
                "usage": self._usage_doc(th.cache, inp, grown, read, c5, c1),
            }
            doc = self._entry(th, "assistant", {"message": message, "requestId": rid}, stamps[i])
            self._add(th.file, _encode(doc).encode())
        day = self._day(stamps[0])
        self.records[mid] = [normalize_model(model), day, inp, out, read, c5, c1]
        self.truth.assistant_lines += len(parts)
        if len(parts) > 1:
            self.truth.traps["streaming_duplicates"] += 1
        th.messages.append((mid, day, message))
        th.fresh += out
        return blocks

    def _tool_result(self, th: _Thread, tool: dict[str, Any], project: _Project) -> None:
        rng = self.rng
        name = tool["name"]
        extra: dict[str, Any]
        if name == "Read":
            text = self._text(2_000, 40_000)
            lines = text.count("\n") + 1
            extra = {
                "type": "text",
                "file": {
                    "filePath": tool["input"]["file_path"],
                    "content": text,
                    "numLines": lines,
                    "startLine": 1,
                    "totalLines": lines,
                },
            }
        elif name == "Bash":
            text = self._text(200, 20_000)
            extra = {"stdout": text, "stderr": "", "interrupted": False, "isImage": False}
        elif name == "Edit":
            original = self._text(2_000, 40_000)
            text = (
                f"The file {tool['input']['file_path']} has been updated. Here's the result "
                f"of running `cat -n` on a snippet of the edited file:\n{self._text(300, 2_000)}"
            )
            extra = {
                "filePath": tool["input"]["file_path"],
                "oldString": tool["input"]["old_string"],
                "newString": tool["input"]["new_string"],
                "originalFile": original,
                "structuredPatch": [
                    {"oldStart": 1, "oldLines": 3, "newStart": 1, "newLines": 4, "lines": []}
                ],
                "userModified": False,
                "replaceAll": False,
            }
        elif name == "Grep":
            text = self._text(100, 8_000)
            extra = {"mode": "content", "numFiles": rng.randint(1, 30), "content": text}
        elif name == "Glob":
            names = [f"{th.env['cwd']}/{f}" for f in rng.sample(_FILES, rng.randint(1, 8))]
            text = "\n".join(names)
            extra = {"filenames": names, "durationMs": rng.randint(2, 90), "truncated": False}
        elif name == "TodoWrite":
            text = "Todos have been modified successfully."
            extra = {"oldTodos": [], "newTodos": tool["input"]["todos"]}
        else:
            text, extra = self._subagent(th, project, tool)
        content = [{"tool_use_id": tool["id"], "type": "tool_result", "content": text}]
        self._user(th, content, {"toolUseResult": extra})
        th.fresh += len(text) // 4 + 20

    # sessions

    def _thread(self, f: _File, env: dict[str, Any], model: str, cache: str, t: int) -> _Thread:
        return _Thread(file=f, env=env, model=model, cache=cache, t=t)

    def _subagent(
        self, th: _Thread, project: _Project, tool: dict[str, Any], replay: bool = False
    ) -> tuple[str, dict[str, Any]]:
        """Write a subagent transcript; return the Task tool's result text and details."""
        rng = self.rng
        agent = f"{rng.getrandbits(28):07x}"
        path = project.path / th.env["sessionId"] / "subagents" / f"agent-{agent}.jsonl"
        env = {
            **th.env,
            "isSidechain": True,
            "agentId": agent,
            "slug": "-".join(rng.sample(_IDENT, 3)),
        }
        model = HAIKU if rng.random() < 0.7 else th.model
        cache = "unsplit" if th.cache == "unsplit" else "5m"
        sub = self._thread(_File(path, crlf=th.file.crlf), env, model, cache, th.t)
        self._user(sub, tool["input"].get("prompt", "continue"))
        if replay:
            self._replay(sub, th)
        for _ in range(rng.randint(1, 8)):
            for block in self._assistant(sub, model, final=False):
                if block["type"] == "tool_use":
                    self._tool_result(sub, block, project)
        self._assistant(sub, model, final=True)
        self._flush(sub.file)
        th.t = sub.t
        summary = self._sentences(200, 2_000)
        total = sum(self.records[m][4] + self.records[m][5] for m, _, _ in sub.messages)
        return summary, {
            "status": "completed",
            "prompt": tool["input"].get("prompt", ""),
            "agentId": agent,
            "content": [{"type": "text", "text": summary}],
            "totalDurationMs": rng.randint(5_000, 300_000),
            "totalTokens": total,
            "totalToolUseCount": len(sub.messages) - 1,
            # Claude Code repeats the subagent's last usage here: not an API message
            "usage": sub.messages[-1][2]["usage"],
        }

    def _replay(self, th: _Thread, parent: _Thread) -> bool:
        """A sidechain line repeating a parent message under a new requestId (same day)."""
        day = self._day(th.t + 1_000)
        candidates = [m for m in parent.messages if m[1] == day]
        if not candidates:
            return False
        _mid, _day, message = self.rng.choice(candidates)
        th.t += 1_000
        env = th.env if th.env["isSidechain"] else {**th.env, "isSidechain": True}
        saved, th.env = th.env, env
        doc = self._entry(th, "assistant", {"message": message, "requestId": self._req_id()}, th.t)
        th.env = saved
        self._add(th.file, _encode(doc).encode())
        self.truth.traps["sidechain_replay"] += 1
        return True

    def _session(self, due: Counter[str]) -> None:
        rng = self.rng
        sid = self._uuid()
        resume = None
        if due["resume"] and self.last_session is not None:
            resume = self.last_session
            project = resume[0]
        else:
            project = rng.choice(self.projects)
        old = due["unsplit"] > 0 or rng.random() < 0.03
        version = (
            rng.choice(("1.0.98", "1.0.113"))
            if old
            else rng.choice(("2.0.14", "2.0.25", "2.0.37", "2.1.29", "2.1.63", "2.1.114"))
        )
        env = {
            "isSidechain": False,
            "userType": "external",
            "cwd": project.cwd,
            "sessionId": sid,
            "version": version,
            "gitBranch": project.branch,
        }
        model = OPUS if rng.random() < 0.4 else SONNET
        cache = "unsplit" if old else rng.choice(("5m", "5m", "1h", "mixed"))
        t = rng.randint(self.start_ms, self.end_ms - 4 * 3_600_000)
        f = _File(project.path / f"{sid}.jsonl", crlf=due["crlf"] > 0)
        if due["crlf"]:
            self.truth.traps["crlf_file"] += 1
        th = self._thread(f, env, model, cache, t)
        if resume is not None:
            _, old_sid, lines, last_t = resume
            for line in lines:
                self._add(f, line.replace(old_sid.encode(), sid.encode()))
            th.t = max(last_t + 60_000, min(last_t + rng.randint(300_000, 129_600_000), t))
            self.truth.traps["resumed_session"] += 1
            due["resume"] -= 1
        elif rng.random() < 0.3:
            summary = {"type": "summary", "summary": rng.choice(_PROMPTS), "leafUuid": self._uuid()}
            self._add(f, _encode(summary).encode())
        # line traps are planted between turns; what is left is planted at the end
        line_traps = [
            k
            for k in (
                "garbage",
                "blank",
                "array",
                "synthetic",
                "api_error",
                "replay_inline",
                "replay_subagent",
                "bad_utf8_user",
                "bad_utf8_assistant",
            )
            for _ in range(due[k])
        ]
        unpriced = 2 * due["unpriced"]
        turns = min(60, int(rng.lognormvariate(1.0, 0.9)) + 1)
        for turn in range(turns):
            if rng.random() < 0.5:
                self._snapshot(th)
            th.t += rng.randint(10_000, 900_000)
            self._user(th, rng.choice(_PROMPTS))
            th.fresh += rng.randint(10, 300)
            for step in range(rng.randint(1, 14)):
                final = step > 0 and rng.random() < 0.25
                step_model = th.model
                if unpriced and rng.random() < 0.5:
                    step_model, unpriced = UNPRICED, unpriced - 1
                elif rng.random() < 0.04:
                    step_model = HAIKU  # a quick side call in the main thread
                blocks = self._assistant(th, step_model, final)
                tools = [b for b in blocks if b["type"] == "tool_use"]
                for tool in tools:
                    if tool["name"] == "Task" and "replay_subagent" in line_traps:
                        line_traps.remove("replay_subagent")
                        self.truth.traps["replay_subagent"] += 1
                        text, extra = self._subagent(th, project, tool, replay=True)
                        content = [
                            {"tool_use_id": tool["id"], "type": "tool_result", "content": text}
                        ]
                        self._user(th, content, {"toolUseResult": extra})
                        th.fresh += len(text) // 4 + 20
                    else:
                        self._tool_result(th, tool, project)
                if th.context + th.fresh > COMPACT_AT:
                    self._system(th, "compact_boundary", "Conversation compacted")
                    th.context, th.fresh = 0, 0
                if not tools or self.size >= self.target:
                    break
            if rng.random() < 0.3:
                self._system(th, "stop_hook_summary", "Stop [scripts/check.sh] completed")
            if line_traps and (rng.random() < 0.3 or turn == turns - 1):
                self._plant(th, project, line_traps.pop(rng.randrange(len(line_traps))))
            if self.size >= self.target:
                break
        while unpriced:  # the history ended early: still write the planned unpriced steps
            self._assistant(th, UNPRICED, final=True)
            unpriced -= 1
        while line_traps:
            self._plant(th, project, line_traps.pop())
        if due["torn"]:
            self._torn(th)
        self._flush(f)
        self.last_session = (project, sid, self._resume_copy(f), th.t)

    def _resume_copy(self, f: _File) -> list[bytes]:
        out, size = [], 0
        for line in f.clean:
            size += len(line)
            if size > RESUME_COPY_MAX:
                break
            out.append(line)
        return out

    # traps

    def _unique_assistant(self, th: _Thread, model: str, text: str) -> tuple[dict[str, Any], str]:
        """An assistant line whose message id appears nowhere else; usage looks real."""
        rng = self.rng
        th.t += rng.randint(500, 5_000)
        inp, read, c5, c1 = (
            rng.randint(1, 9),
            rng.randint(10_000, 90_000),
            rng.randint(100, 9_000),
            rng.randint(0, 3_000),
        )
        out = rng.randint(10, 900)
        mid = self._msg_id()
        message = {
            "id": mid,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": self._usage_doc("mixed", inp, out, read, c5, c1),
        }
        doc = self._entry(th, "assistant", {"message": message, "requestId": self._req_id()}, th.t)
        return doc, mid

    def _trap_tokens(self, kind: str, usage: dict[str, Any]) -> None:
        self.truth.trap_token_lines[kind] += 1
        split = usage["cache_creation"]
        for token_type, n in (
            ("input", usage["input_tokens"]),
            ("output", usage["output_tokens"]),
            ("cache_read", usage["cache_read_input_tokens"]),
            ("cache_creation_5m", split["ephemeral_5m_input_tokens"]),
            ("cache_creation_1h", split["ephemeral_1h_input_tokens"]),
        ):
            self.truth.trap_tokens[(kind, token_type)] += n

    def _plant(self, th: _Thread, project: _Project, kind: str) -> None:
        rng = self.rng
        truth = self.truth
        if kind == "garbage":
            for _ in range(rng.randint(1, 3)):
                self._add(th.file, rng.choice(_GARBAGE), clean=False)
                truth.rejected_lines["garbage"] += 1
            doc, _ = self._unique_assistant(th, th.model, "cut off")
            text = _encode(doc)  # a torn line in the middle of a file (cut between characters)
            self._add(th.file, text[: len(text) * 2 // 3].encode(), clean=False)
            truth.rejected_lines["garbage"] += 1
        elif kind == "blank":
            for _ in range(rng.randint(1, 3)):
                self._add(th.file, b"", clean=False)
                truth.blank_lines += 1
        elif kind == "array":
            doc, _ = self._unique_assistant(th, th.model, "inside an array")
            self._trap_tokens("array", doc["message"]["usage"])
            self._add(th.file, _encode([doc]).encode(), clean=False)
            self._add(th.file, b'["x",1,{"type":"user"}]', clean=False)
            truth.rejected_lines["array"] += 2
        elif kind == "synthetic":
            doc, _ = self._unique_assistant(th, SYNTHETIC, "No response requested.")
            doc["message"]["id"] = self._uuid()
            del doc["requestId"]
            self._trap_tokens("synthetic", doc["message"]["usage"])
            self._add(th.file, _encode(doc).encode(), clean=False)  # not copied on resume
            truth.ignored_lines["synthetic"] += 1
        elif kind == "api_error":
            # Claude Code writes these as "<synthetic>"; a real model id is the harder case
            model = SYNTHETIC if truth.ignored_lines["api_error"] % 2 else th.model
            error = (
                'API Error: 529 {"type":"error","error":{"type":"overloaded_error",'
                '"message":"Overloaded"}}'
            )
            doc, _ = self._unique_assistant(th, model, error)
            doc["isApiErrorMessage"] = True
            self._trap_tokens("api_error", doc["message"]["usage"])
            self._add(th.file, _encode(doc).encode(), clean=False)
            truth.ignored_lines["api_error"] += 1
        elif kind == "replay_inline":
            if not self._replay(th, th):
                self._assistant(th, th.model, final=True)
                self._replay(th, th)
        elif kind == "replay_subagent":
            tool = self._tool_use(th)
            tool.update(name="Task", input={"description": "Replay", "prompt": "check"})
            if not th.messages:
                self._assistant(th, th.model, final=True)
            text, extra = self._subagent(th, project, tool, replay=True)
            content = [{"tool_use_id": tool["id"], "type": "tool_result", "content": text}]
            self._user(th, content, {"toolUseResult": extra})
        elif kind == "bad_utf8_user":
            th.t += 1_000
            body = {"message": {"role": "user", "content": f"pasted from a terminal: {_MARK}"}}
            line = _encode(self._entry(th, "user", body, th.t)).encode()
            self._add(th.file, line.replace(_MARK.encode(), _BAD_UTF8), clean=False)
            truth.rejected_lines["invalid_utf8"] += 1
        elif kind == "bad_utf8_assistant":
            doc, _ = self._unique_assistant(th, th.model, f"the file was {_MARK} encoded")
            self._trap_tokens("invalid_utf8", doc["message"]["usage"])
            line = _encode(doc).encode()
            self._add(th.file, line.replace(_MARK.encode(), _BAD_UTF8), clean=False)
            truth.rejected_lines["invalid_utf8"] += 1
        else:
            raise ValueError(kind)
        truth.traps[kind] += 1

    def _torn(self, th: _Thread) -> None:
        doc, _ = self._unique_assistant(th, th.model, self._sentences(100, 600))
        text = _encode(doc)  # cut between characters: valid UTF-8, incomplete JSON
        th.file.torn = text[: len(text) * self.rng.randint(30, 85) // 100].encode()
        self.truth.rejected_lines["torn"] += 1
        self.truth.traps["torn"] += 1

    # run

    def run(self) -> HistoryTruth:
        started = time.perf_counter()
        pending: Counter[str] = Counter()
        while self.size < self.target:
            pending.update(self._due())
            session_due = Counter(pending)
            pending.clear()
            if session_due["resume"] and self.last_session is None:
                pending["resume"] = session_due.pop("resume")  # nothing to resume yet
            self._session(session_due)
            pending["resume"] += session_due["resume"]  # more resumes than sessions
        self._finish()
        self.truth.generation_seconds = time.perf_counter() - started
        return self.truth

    def _finish(self) -> None:
        truth = self.truth
        for model, day, inp, out, read, c5, c1 in self.records.values():
            truth.steps[model] += 1
            for token_type, n in zip(TOKEN_TYPES, (inp, out, read, c5, c1), strict=True):
                truth.tokens[(model, token_type)] += n
                truth.by_day[(day, model, token_type)] += n
        for model, rates in PRICES_PICO.items():
            if truth.steps[model]:
                truth.cost_pico[model] = sum(
                    truth.tokens[(model, t)] * rate
                    for t, rate in zip(PRICED_TYPES, rates, strict=True)
                )


def generate_history(
    root: Path,
    *,
    seed: int = 1,
    target_bytes: int = 5_000_000,
    traps: bool = True,
    start: datetime = DEFAULT_START,
    days: int = 20,
) -> HistoryTruth:
    """Write a Claude Code history of about ``target_bytes`` below ``root/projects``.

    Sessions start at random times over ``days`` days from ``start`` (UTC). With
    ``traps=False`` every API response is one line and no trap is planted (unsplit cache
    writes and the unpriced model still appear: they are not traps but real data).
    """
    if days < 1:
        raise ValueError("days must be >= 1")
    return _Generator(Path(root), seed, target_bytes, traps, start, days).run()


def iter_files(truth: HistoryTruth) -> Iterable[Path]:
    """Every transcript file of a generated history, sorted."""
    return sorted(truth.projects_dir.rglob("*.jsonl"))


def usage_lines(root: Path) -> list[bytes]:
    """Every line below ``root`` that mentions ``"usage"``: the decoders' inputs."""
    return [
        line
        for path in sorted(root.rglob("*.jsonl"))
        for line in path.read_bytes().splitlines()
        if b'"usage"' in line
    ]
