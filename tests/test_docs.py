"""Generated docs: current, complete, and backed by what the code does.

``docs/gen.py`` renders ``docs/metrics.md`` and ``docs/configuration.md``. Its list of
settings is written by hand (``config.py`` has none), so these tests hold it against
``load_settings``, ``_FILE_KEYS`` and ``Settings()``; exit codes are run for real.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client import generate_latest

from otel_claude import config
from otel_claude.app import build_app
from otel_claude.config import Settings, load_settings
from otel_claude.errors import ConfigError
from otel_claude.simulator import Simulator
from otel_claude.sources.transcripts import projects_dirs
from tests.procs import free_port

ROOT = Path(__file__).resolve().parent.parent
GEN = ROOT / "docs" / "gen.py"
METRICS_MD = ROOT / "docs" / "metrics.md"
CONFIGURATION_MD = ROOT / "docs" / "configuration.md"
RUNBOOK = ROOT / "docs" / "runbook.md"
ALERTS = ROOT / "deploy" / "prometheus" / "rules" / "otel-claude-alerts.yml"
GOLDEN = ROOT / "tests" / "fixtures" / "metrics.golden.txt"
PACKAGE = ROOT / "otel_claude"
ENV_NAME = re.compile(r"(OTEL|ANTHROPIC|CLAUDE|XDG)_[A-Z0-9_]+")


def _load_gen() -> ModuleType:
    spec = importlib.util.spec_from_file_location("docs_gen", GEN)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["docs_gen"] = module
    spec.loader.exec_module(module)
    return module


gen = _load_gen()


def _string_literals(*paths: Path) -> set[str]:
    """Every string constant in the given Python files (parsed, not pattern-matched)."""
    out: set[str] = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                out.add(node.value)
    return out


# --- generated files are current -----------------------------------------------------


def test_generated_docs_are_current() -> None:
    proc = subprocess.run(
        [sys.executable, str(GEN), "--check"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr + "\nrun: python docs/gen.py"


# --- the settings list matches config.py ---------------------------------------------


def _env_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(value)
    return str(value)


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {_toml(v)}" for k, v in value.items()) + " }"
    raise TypeError(value)


def _file_path(key: str) -> list[str]:
    """``admin.budgets.workspaces."<id>"`` → ``["admin", "budgets", "workspaces"]``."""
    return [part for part in key.split(".") if not part.startswith('"')]


def _write_config(path: Path, key: str, value: Any) -> Path:
    parts = _file_path(key)
    if len(parts) == 1:
        path.write_text(f"{parts[0]} = {_toml(value)}\n")
    else:
        path.write_text(f"[{parts[0]}]\n{'.'.join(parts[1:])} = {_toml(value)}\n")
    return path


def _example(setting: Any, tmp_path: Path) -> Any:
    """The setting's example, materialized: secrets and paths become files."""
    if setting.kind == "secret":
        return str(_secret_file(tmp_path, setting.example))
    if setting.kind == "path":
        prices = tmp_path / "prices.toml"
        prices.write_text("")
        return str(prices)
    return setting.example


def _secret_file(tmp_path: Path, secret: str) -> Path:
    path = tmp_path / "secret"
    path.write_text(secret + "\n")
    return path


def _value(settings: Settings, attr: str) -> Any:
    return getattr(settings, attr)


def _baseline(setting: Any) -> Any:
    """The default as load_settings gives it with an empty environment."""
    return _value(load_settings(env={}), setting.attr)


def test_every_file_key_is_known_to_config() -> None:
    for setting in gen.SETTINGS:
        if not setting.key:
            continue
        parts = _file_path(setting.key)
        assert parts[0] in config._FILE_KEYS[""], setting.key
        if len(parts) == 1:
            assert parts[0] not in config._FILE_KEYS, f"{setting.key} is a table"
        else:
            assert parts[1] in config._FILE_KEYS[parts[0]], setting.key


def test_every_config_file_key_is_documented() -> None:
    documented = {tuple(_file_path(s.key)[:2]) for s in gen.SETTINGS if s.key}
    for section, keys in config._FILE_KEYS.items():
        for key in keys:
            if section == "" and key in config._FILE_KEYS:
                continue  # a table; its keys are checked below
            wanted = (key,) if section == "" else (section, key)
            assert wanted in documented, ".".join(wanted)


def test_every_settings_field_is_documented() -> None:
    documented = {name for s in gen.SETTINGS for name in s.settings_fields}
    assert documented == {f.name for f in dataclasses.fields(Settings)}


def test_defaults_match_settings() -> None:
    defaults = Settings()
    loaded = load_settings(env={})
    for setting in gen.SETTINGS:
        if not setting.attr or setting.dynamic:
            continue
        assert _value(defaults, setting.attr) == setting.default, setting.attr
        assert _value(loaded, setting.attr) == setting.default, setting.attr


def test_dynamic_defaults_are_described() -> None:
    by_attr = {s.attr: s for s in gen.SETTINGS}
    state = by_attr["state_dir"]
    assert load_settings(env={}).state_dir == config.default_state_dir(os.environ)
    xdg = config.default_state_dir({"XDG_STATE_HOME": "$XDG_STATE_HOME"})
    home = str(config.default_state_dir({})).replace(str(Path.home()), "~")
    assert str(xdg) in state.shown_default and home in state.shown_default
    roots = by_attr["transcript_roots"]
    assert load_settings(env={}).transcript_roots == tuple(projects_dirs({}))
    for root in projects_dirs({}, home=Path("~")):
        assert f"`{root.parent}`" in roots.shown_default


def _env_for(setting: Any, var: str, tmp_path: Path) -> dict[str, str]:
    if setting.kind == "secret" and var.endswith("_FILE"):
        return {var: str(_secret_file(tmp_path, setting.example))}
    if setting.kind == "path":
        return {var: _example(setting, tmp_path)}
    return {var: _env_text(setting.example)}


def test_every_environment_variable_is_honoured(tmp_path: Path) -> None:
    for setting in gen.SETTINGS:
        for var in setting.env:
            if not setting.attr:  # OTEL_CLAUDE_CONFIG
                config_file = _write_config(tmp_path / "c.toml", "listen", "127.0.0.1:9998")
                assert load_settings(env={var: str(config_file)}).listen_port == 9998
                continue
            got = _value(load_settings(env=_env_for(setting, var, tmp_path)), setting.attr)
            assert got != _baseline(setting), var
            if setting.kind == "secret":
                assert got == setting.example, var


def test_every_file_key_is_honoured(tmp_path: Path) -> None:
    for setting in gen.SETTINGS:
        if not setting.key:
            continue
        config_file = _write_config(tmp_path / "c.toml", setting.key, _example(setting, tmp_path))
        got = _value(load_settings(env={"OTEL_CLAUDE_CONFIG": str(config_file)}), setting.attr)
        assert got != _baseline(setting), setting.key


def test_every_flag_is_honoured(tmp_path: Path) -> None:
    commands = gen._subparsers()
    dests = {
        opt: action.dest
        for parser in commands.values()
        for action in parser._actions
        for opt in action.option_strings
    }
    for setting in gen.SETTINGS:
        if not setting.flag:
            continue
        assert setting.flag in dests, setting.flag
        if not setting.attr:  # --config
            config_file = _write_config(tmp_path / "c.toml", "listen", "127.0.0.1:9997")
            flags = {dests[setting.flag]: str(config_file)}
            assert load_settings(env={}, flags=flags).listen_port == 9997
            continue
        flags = {dests[setting.flag]: setting.example}
        assert _value(load_settings(env={}, flags=flags), setting.attr) != _baseline(setting)


def test_every_settings_flag_of_the_cli_is_documented() -> None:
    readable = {f.name for f in dataclasses.fields(Settings)} | {"listen", "config"}
    documented = {s.flag for s in gen.SETTINGS if s.flag}
    for name, parser in gen._subparsers().items():
        for action in parser._actions:
            if action.dest in readable:
                assert set(action.option_strings) & documented, (name, action.option_strings)


def _where(setting: Any) -> str:
    """The name a setting's problems carry when it is fed as ``_load_raw`` does."""
    primary = [v for v in setting.env if not v.endswith("_FILE")]
    return primary[0] if primary else setting.key


def _load_raw(setting: Any, raw: Any, tmp_path: Path) -> Settings:
    primary = [v for v in setting.env if not v.endswith("_FILE")]
    if primary:
        return load_settings(env={primary[0]: _env_text(raw)})
    config_file = _write_config(tmp_path / "c.toml", setting.key, raw)
    return load_settings(env={"OTEL_CLAUDE_CONFIG": str(config_file)})


def test_choices_are_what_config_accepts(tmp_path: Path) -> None:
    for setting in gen.SETTINGS:
        if not setting.choices:
            continue
        listed = isinstance(setting.example, list)
        for choice in setting.choices:
            _load_raw(setting, [choice] if listed else choice, tmp_path)
        name = _where(setting)
        with pytest.raises(ConfigError) as err:
            _load_raw(setting, ["no-such-value"] if listed else "no-such-value", tmp_path)
        assert [p.setting for p in err.value.problems] == [name], setting.key


def test_minimums_are_what_config_enforces(tmp_path: Path) -> None:
    for setting in gen.SETTINGS:
        if setting.minimum is None:
            continue
        whole = isinstance(setting.default, int)
        _load_raw(setting, setting.minimum, tmp_path)
        below = setting.minimum - 1 if whole else setting.minimum / 2
        name = _where(setting)
        with pytest.raises(ConfigError) as err:
            _load_raw(setting, below, tmp_path)
        assert [p.setting for p in err.value.problems] == [name], setting.key
        assert f"≥ {setting.minimum:g}" in setting.allowed, setting.key


def test_every_environment_variable_in_the_code_is_documented() -> None:
    text = CONFIGURATION_MD.read_text(encoding="utf-8")
    files = [
        PACKAGE / "config.py",
        PACKAGE / "exposition" / "otlp.py",
        PACKAGE / "sources" / "transcripts.py",
    ]
    names = {s for s in _string_literals(*files) if ENV_NAME.fullmatch(s)}
    assert names, "no environment variables found in the code"
    for name in names:
        assert re.search(rf"\b{name}\b", text), name


def test_documented_variables_exist_in_the_code() -> None:
    literals = _string_literals(*PACKAGE.rglob("*.py"))
    for setting in gen.SETTINGS:
        for var in setting.env:
            base = var.removesuffix("_FILE") if setting.kind == "secret" else var
            assert base in literals, var
    for variable in gen.OTLP_VARIABLES:
        if not variable.by_sdk:
            assert variable.name in literals, variable.name


# --- exit codes ---------------------------------------------------------------------


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "ANTHROPIC_"))}
    return subprocess.run(
        [sys.executable, "-m", "otel_claude", *args],
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


GOOD_LINE = json.dumps(
    {
        "type": "assistant",
        "session_id": "docs",
        "message": {
            "id": "msg_docs_1",
            "model": "claude-sonnet-4-5",
            "usage": {"input_tokens": 3, "output_tokens": 5},
        },
    }
)


@pytest.fixture
def simulator() -> Iterator[Simulator]:
    sim = Simulator(seed=3, api_key="sk-ant-admin01-docs")
    sim.start()
    yield sim
    sim.stop()


def test_documented_exit_codes(tmp_path: Path, simulator: Simulator) -> None:
    assert set(gen.EXIT_CODES) == set(gen._subparsers()), "document every command"
    state = ["--state-dir", str(tmp_path / "state")]
    good = tmp_path / "good.ndjson"
    good.write_text(GOOD_LINE + "\n")
    mixed = tmp_path / "mixed.ndjson"
    mixed.write_text("not json\n" + GOOD_LINE + "\n")
    claude = tmp_path / "claude"
    (claude / "projects").mkdir(parents=True)
    bad_listen = {"OTEL_CLAUDE_LISTEN": "bogus"}
    admin = {
        "ANTHROPIC_ADMIN_API_KEY": simulator.api_key,
        "OTEL_CLAUDE_ADMIN_API_URL": simulator.url,
    }
    now = datetime.now(UTC)
    window = [
        "--since",
        (now - timedelta(hours=3)).isoformat(),
        "--until",
        (now - timedelta(hours=1)).isoformat(),
    ]
    port = str(free_port())
    cases: list[tuple[str, int, list[str], dict[str, str]]] = [
        ("serve", 1, [*state], bad_listen),
        ("demo", 1, [*state], bad_listen),
        ("ingest", 0, [str(good), *state], {}),
        ("ingest", 3, [str(mixed), *state], {}),
        ("ingest", 1, [str(tmp_path / "missing.ndjson"), *state], {}),
        ("report", 0, [], {"CLAUDE_CONFIG_DIR": str(claude)}),
        ("report", 1, [], {"CLAUDE_CONFIG_DIR": str(tmp_path / "nowhere")}),
        ("check", 0, [*state], {}),
        ("check", 1, [*state], {"OTEL_CLAUDE_POLL_INTERVAL": "often"}),
        ("check", 3, [*state, "--online", "--listen", f"127.0.0.1:{port}"], {}),
        ("backfill", 0, [*window, "--out", str(tmp_path / "b.om"), *state], admin),
        ("backfill", 1, [*window, "--out", str(tmp_path / "c.om"), *state], {}),
    ]
    for command, code, args, env in cases:
        proc = _run(command, *args, env=env)
        assert proc.returncode == code, (command, args, proc.stdout, proc.stderr)
    # Stopping serve/demo with SIGTERM (exit 0) is run in test_cli.py and test_demo.py.
    covered = {(c, code) for c, code, _, _ in cases} | {("serve", 0), ("demo", 0)}
    documented = {(c, code) for c, codes in gen.EXIT_CODES.items() for code, _ in codes}
    assert covered == documented
    assert _run().returncode == gen.USAGE_ERROR[0]
    assert _run("report", "--by", "year").returncode == gen.USAGE_ERROR[0]


# --- metrics ------------------------------------------------------------------------


def test_golden_metric_names_are_documented() -> None:
    text = METRICS_MD.read_text(encoding="utf-8")
    names = set()
    for line in GOLDEN.read_text(encoding="utf-8").splitlines():
        if line.startswith("# TYPE "):
            names.add(line.split()[2])
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    assert names
    missing = sorted(n for n in names if f"`{n}`" not in text)
    assert not missing, missing


def test_what_serve_registers_is_documented(tmp_path: Path) -> None:
    """The real wiring (Admin API key, every source) renders nothing the docs lack."""
    settings = load_settings(
        env={
            "ANTHROPIC_ADMIN_API_KEY": "sk-ant-admin01-docs",
            "OTEL_CLAUDE_STATE_DIR": str(tmp_path / "state"),
            "OTEL_CLAUDE_PROJECT_LABEL": "on",
        }
    )
    transport = httpx.MockTransport(lambda request: httpx.Response(500))
    app = build_app(settings, {}, transport=transport)
    try:
        exposition = generate_latest(app.registry).decode()
    finally:
        app.close()
    text = METRICS_MD.read_text(encoding="utf-8")
    names = {line.split()[2] for line in exposition.splitlines() if line.startswith("# TYPE ")}
    assert "otel_claude_admin_requests_total" in names
    missing = sorted(name for name in names if f"`{name}`" not in text)
    assert not missing, missing


def test_metric_notes_name_rendered_metrics() -> None:
    text = METRICS_MD.read_text(encoding="utf-8")
    for name in gen.METRIC_NOTES:
        assert f"- `{name}`: " in text, name


def test_label_values_occur_in_the_code() -> None:
    literals = _string_literals(*PACKAGE.rglob("*.py"))
    for entry in gen.LABEL_VALUES:
        if not entry.literal:
            continue
        for value in entry.values:
            assert value in literals, (entry.label, value)


# --- runbook ------------------------------------------------------------------------


def _anchor(heading: str) -> str:
    """GitHub's heading anchor: lowercase, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def test_every_alert_has_a_runbook_section() -> None:
    rules = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    alerts = [r for g in rules["groups"] for r in g["rules"] if "alert" in r]
    assert alerts
    anchors = {
        _anchor(line[3:])
        for line in RUNBOOK.read_text(encoding="utf-8").splitlines()
        if line.startswith("## ")
    }
    for rule in alerts:
        name = rule["alert"]
        assert name.lower() in anchors, f"docs/runbook.md has no section ## {name}"
        url = rule["annotations"]["runbook_url"]
        assert url.endswith("docs/runbook.md#" + name.lower()), url
