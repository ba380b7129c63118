"""Settings: defaults, overridden by a TOML config file, then environment, then flags.

Every problem found is collected and raised together in one ``ConfigError`` naming the
setting (``OTEL_CLAUDE_LISTEN``, ``ledger.dedup_horizon_days``, ``--listen``…), so
``otel-claude check`` can report them all at once.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from otel_claude.errors import ConfigError, Problem
from otel_claude.sources.messages import (
    DEFAULT_MAX_BATCH_MESSAGES,
    DEFAULT_MAX_JSON_DEPTH,
    DEFAULT_MAX_LINE_BYTES,
    Limits,
)
from otel_claude.sources.transcripts import projects_dirs

if TYPE_CHECKING:  # imported when used: `report` and `check` need no TLS stack
    from otel_claude.websecurity import WebSecurity

DEFAULT_LISTEN = "127.0.0.1:9477"
DEFAULT_MAX_BODY = 16 * 1024 * 1024
DEFAULT_HORIZON_DAYS = 60.0
DEFAULT_ADMIN_URL = "https://api.anthropic.com"

_FILE_KEYS: dict[str, set[str]] = {
    "": {
        "listen",
        "state_dir",
        "log_level",
        "log_format",
        "ingest",
        "ledger",
        "pricing",
        "admin",
        "transcripts",
        "web",
    },
    "transcripts": {"enabled", "poll_interval_s", "use_inotify", "project_label"},
    "web": {"tls_cert_file", "tls_key_file", "basic_auth_users"},
    "ingest": {
        "token_file",
        "max_body_bytes",
        "max_line_bytes",
        "max_json_depth",
        "max_batch_messages",
    },
    "ledger": {"dedup_horizon_days", "synchronous", "max_models", "max_series_per_family"},
    "pricing": {"file", "models"},
    "admin": {
        "api_url",
        "poll_interval",
        "since",
        "key_file",
        "group_by",
        "lookback_hours",
        "actor_labels",
        "actor_salt",
        "names_refresh_s",
        "timeout_s",
        "sources",
        "budgets",
    },
}


def default_state_dir(env: Mapping[str, str]) -> Path:
    """``$XDG_STATE_HOME/otel-claude``, else ``~/.local/state/otel-claude``."""
    base = env.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "otel-claude"


@dataclass(frozen=True)
class Settings:
    """The validated configuration of one exporter process."""

    listen_host: str = "127.0.0.1"
    listen_port: int = 9477
    state_dir: Path = field(default_factory=lambda: default_state_dir(os.environ))
    log_level: str = "info"
    log_format: str = "logfmt"
    ingest_token: str | None = field(default=None, repr=False)
    ingest_max_bytes: int = DEFAULT_MAX_BODY
    ingest_max_line_bytes: int = DEFAULT_MAX_LINE_BYTES
    ingest_max_json_depth: int = DEFAULT_MAX_JSON_DEPTH
    ingest_max_batch_messages: int = DEFAULT_MAX_BATCH_MESSAGES
    dedup_horizon_days: float = DEFAULT_HORIZON_DAYS
    ledger_synchronous: str = "normal"
    max_models: int = 200
    max_series_per_family: int = 10_000
    web_tls_cert_file: Path | None = None  # PEM certificate (may also hold the key)
    web_tls_key_file: Path | None = None
    web_basic_auth_users: dict[str, str] = field(default_factory=dict, repr=False)
    prices_file: Path | None = None
    price_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    admin_api_key: str | None = field(default=None, repr=False)
    admin_api_url: str = DEFAULT_ADMIN_URL
    poll_interval: float = 60.0
    admin_since: datetime | None = None
    admin_group_by: tuple[str, ...] = ("model", "workspace_id", "service_tier", "context_window")
    admin_lookback_s: float = 6 * 3600.0
    admin_sources: tuple[str, ...] = ("usage", "cost", "claude_code", "names")
    admin_timeout_s: float = 30.0
    names_refresh_s: float = 3600.0
    actor_labels: str = "hash"
    actor_salt: str = field(default="", repr=False)
    budget_organization: float | None = None
    budget_workspaces: dict[str, float] = field(default_factory=dict)
    transcripts_enabled: bool = True
    transcript_roots: tuple[Path, ...] = ()
    transcripts_poll_s: float = 2.0
    transcripts_inotify: bool = True
    project_label: bool = False
    project_allow: tuple[str, ...] = ()  # empty: every project (up to a cap)

    @property
    def ingest_limits(self) -> Limits:
        """The bounds on ingested and transcript lines (``[ingest]`` settings)."""
        return Limits(
            max_line_bytes=self.ingest_max_line_bytes,
            max_json_depth=self.ingest_max_json_depth,
            max_batch_messages=self.ingest_max_batch_messages,
        )

    def web_security(self) -> WebSecurity:
        """A fresh TLS / basic-auth guard for the HTTP pages (one per server)."""
        from otel_claude.websecurity import WebSecurity

        return WebSecurity(
            self.web_tls_cert_file, self.web_tls_key_file, dict(self.web_basic_auth_users)
        )

    @property
    def ledger_path(self) -> Path:
        """The SQLite ledger inside the state directory."""
        return self.state_dir / "ledger.sqlite3"

    @property
    def listen(self) -> str:
        """``host:port`` as given (IPv6 hosts in brackets)."""
        host = f"[{self.listen_host}]" if ":" in self.listen_host else self.listen_host
        return f"{host}:{self.listen_port}"


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def load_settings(
    *,
    env: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
) -> Settings:
    """Build ``Settings`` from defaults, the config file, ``env`` and ``flags`` (in that order)."""
    env = os.environ if env is None else env
    flags = {k: v for k, v in (flags or {}).items() if v is not None}
    problems: list[Problem] = []
    raw: dict[str, tuple[str, Any]] = {}  # setting -> (where it came from, value)

    config_path = flags.get("config") or env.get("OTEL_CLAUDE_CONFIG")
    where_config = "--config" if flags.get("config") else "OTEL_CLAUDE_CONFIG"
    if config_path:
        _read_file(Path(config_path), where_config, raw, problems)

    for name, var in (
        ("listen", "OTEL_CLAUDE_LISTEN"),
        ("state_dir", "OTEL_CLAUDE_STATE_DIR"),
        ("log_level", "OTEL_CLAUDE_LOG_LEVEL"),
        ("log_format", "OTEL_CLAUDE_LOG_FORMAT"),
        ("ingest.max_body_bytes", "OTEL_CLAUDE_INGEST_MAX_BYTES"),
        ("ingest.max_line_bytes", "OTEL_CLAUDE_INGEST_MAX_LINE_BYTES"),
        ("ingest.max_json_depth", "OTEL_CLAUDE_INGEST_MAX_JSON_DEPTH"),
        ("ingest.max_batch_messages", "OTEL_CLAUDE_INGEST_MAX_BATCH_MESSAGES"),
        ("ledger.dedup_horizon_days", "OTEL_CLAUDE_DEDUP_HORIZON_DAYS"),
        ("admin.api_url", "OTEL_CLAUDE_ADMIN_API_URL"),
        ("admin.poll_interval", "OTEL_CLAUDE_POLL_INTERVAL"),
        ("admin.since", "OTEL_CLAUDE_ADMIN_SINCE"),
        ("pricing.file", "OTEL_CLAUDE_PRICES_FILE"),
        ("admin.group_by", "OTEL_CLAUDE_ADMIN_GROUP_BY"),
        ("admin.sources", "OTEL_CLAUDE_ADMIN_SOURCES"),
        ("admin.actor_labels", "OTEL_CLAUDE_ACTOR_LABELS"),
        ("transcripts.enabled", "OTEL_CLAUDE_TRANSCRIPTS"),
        ("transcripts.project_label", "OTEL_CLAUDE_PROJECT_LABEL"),
    ):
        if env.get(var):
            raw[name] = (var, env[var])
    for name, flag in (
        ("listen", "listen"),
        ("state_dir", "state_dir"),
        ("log_level", "log_level"),
        ("log_format", "log_format"),
    ):
        if flag in flags:
            raw[name] = ("--" + flag.replace("_", "-"), flags[flag])

    values: dict[str, Any] = {}
    if "listen" in raw:
        where, value = raw["listen"]
        parsed = _parse_listen(str(value))
        if parsed is None:
            problems.append(Problem(where, f"expected HOST:PORT, got {value!r}"))
        else:
            values["listen_host"], values["listen_port"] = parsed
    if "state_dir" in raw:
        values["state_dir"] = Path(str(raw["state_dir"][1])).expanduser()
    if "log_level" in raw:
        where, value = raw["log_level"]
        if value not in ("debug", "info", "warning", "error"):
            problems.append(Problem(where, "expected one of debug, info, warning, error"))
        else:
            values["log_level"] = value
    if "log_format" in raw:
        where, value = raw["log_format"]
        if value not in ("logfmt", "json"):
            problems.append(Problem(where, "expected logfmt or json"))
        else:
            values["log_format"] = value
    _number(raw, "ingest.max_body_bytes", "ingest_max_bytes", int, 1, values, problems)
    _number(raw, "ingest.max_line_bytes", "ingest_max_line_bytes", int, 1, values, problems)
    _number(raw, "ingest.max_json_depth", "ingest_max_json_depth", int, 1, values, problems)
    _number(raw, "ingest.max_batch_messages", "ingest_max_batch_messages", int, 1, values, problems)
    _number(raw, "ledger.dedup_horizon_days", "dedup_horizon_days", float, 0.001, values, problems)
    _number(raw, "ledger.max_models", "max_models", int, 1, values, problems)
    _number(raw, "ledger.max_series_per_family", "max_series_per_family", int, 1, values, problems)
    _number(raw, "admin.poll_interval", "poll_interval", float, 1.0, values, problems)
    if "ledger.synchronous" in raw:
        where, value = raw["ledger.synchronous"]
        if str(value).lower() not in ("normal", "full"):
            problems.append(Problem(where, "expected normal or full"))
        else:
            values["ledger_synchronous"] = str(value).lower()
    if "pricing.file" in raw:
        where, value = raw["pricing.file"]
        path = Path(str(value)).expanduser()
        if not path.is_file():
            problems.append(Problem(where, f"price file {path} does not exist"))
        values["prices_file"] = path
    if "pricing.models" in raw:
        where, value = raw["pricing.models"]
        if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
            problems.append(Problem(where, "expected a table of model tables"))
        else:
            values["price_overrides"] = value
    if "admin.api_url" in raw:
        where, value = raw["admin.api_url"]
        parts = urlsplit(str(value))
        if parts.scheme not in ("http", "https") or not parts.netloc:
            problems.append(Problem(where, "expected an http(s) URL"))
        else:
            values["admin_api_url"] = str(value).rstrip("/")
    if "admin.since" in raw:
        where, value = raw["admin.since"]
        try:
            since = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
            if since.tzinfo is None:
                raise ValueError
            values["admin_since"] = since
        except ValueError:
            problems.append(
                Problem(where, "expected an RFC 3339 time with offset, e.g. 2026-11-01T00:00:00Z")
            )

    _number(raw, "admin.lookback_hours", "admin_lookback_s", float, 0.02, values, problems)
    if "admin_lookback_s" in values:
        values["admin_lookback_s"] *= 3600
    _number(raw, "admin.names_refresh_s", "names_refresh_s", float, 60.0, values, problems)
    _number(raw, "admin.timeout_s", "admin_timeout_s", float, 0.1, values, problems)
    for name, attr, allowed in (
        ("admin.group_by", "admin_group_by", GROUP_BY_DIMENSIONS),
        ("admin.sources", "admin_sources", ADMIN_SOURCES),
    ):
        if name in raw:
            where, value = raw[name]
            items = _list(value)
            bad = [i for i in items if i not in allowed] if items is not None else None
            if items is None or bad:
                problems.append(
                    Problem(
                        where,
                        f"expected a list of {', '.join(allowed)}"
                        + (f"; unknown: {', '.join(bad)}" if bad else ""),
                    )
                )
            else:
                values[attr] = tuple(items)
    if "admin.actor_labels" in raw:
        where, value = raw["admin.actor_labels"]
        if value not in ("hash", "plain", "drop"):
            problems.append(Problem(where, "expected hash, plain or drop"))
        else:
            values["actor_labels"] = value
    if "admin.actor_salt" in raw:
        values["actor_salt"] = str(raw["admin.actor_salt"][1])
    if "admin.budgets" in raw:
        _budgets(raw["admin.budgets"], values, problems)
    for name, attr in (
        ("transcripts.enabled", "transcripts_enabled"),
        ("transcripts.use_inotify", "transcripts_inotify"),
    ):
        if name in raw:
            where, value = raw[name]
            switch = _flag(value)
            if switch is None:
                problems.append(Problem(where, "expected on/off (true/false)"))
            else:
                values[attr] = switch
    _number(raw, "transcripts.poll_interval_s", "transcripts_poll_s", float, 0.05, values, problems)
    values["transcript_roots"] = tuple(projects_dirs(env))
    _web(raw, values, problems)
    if "transcripts.project_label" in raw:
        where, value = raw["transcripts.project_label"]
        switch = _flag(value) if not isinstance(value, list) else None
        if switch is not None:
            values["project_label"] = switch
        else:
            projects = _list(value)
            if not projects:
                problems.append(Problem(where, "expected on/off or a list of project names"))
            else:
                values["project_label"] = True
                values["project_allow"] = tuple(projects)

    token = _secret(env, "OTEL_CLAUDE_INGEST_TOKEN", raw.get("ingest.token_file"), problems)
    if token is not None:
        values["ingest_token"] = token
    key = _secret(env, "ANTHROPIC_ADMIN_API_KEY", raw.get("admin.key_file"), problems)
    if key is not None:
        values["admin_api_key"] = key

    for var in ("OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL"):
        if env.get(var) and env[var].strip() not in ("http/protobuf", "grpc"):
            problems.append(Problem(var, "expected http/protobuf or grpc"))

    host = values.get("listen_host", "127.0.0.1")
    if not is_loopback(host) and not values.get("ingest_token"):
        where = raw["listen"][0] if "listen" in raw else "OTEL_CLAUDE_LISTEN"
        problems.append(
            Problem(
                where,
                f"listening on {host} (beyond loopback) needs OTEL_CLAUDE_INGEST_TOKEN so that "
                "only authorized clients can post events",
            )
        )
    if problems:
        raise ConfigError(problems)
    return Settings(**values)


def _read_file(
    path: Path, where: str, raw: dict[str, tuple[str, Any]], problems: list[Problem]
) -> None:
    import tomllib  # here: most runs have no file, and every command pays for imports (4 ms)

    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        problems.append(Problem(where, f"cannot read {path}: {exc.strerror}"))
        return
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        problems.append(Problem(where, f"{path} is not valid TOML: {exc}"))
        return
    for key, value in document.items():
        if key not in _FILE_KEYS[""]:
            problems.append(Problem(key, f"unknown setting in {path}"))
        elif key in _FILE_KEYS:
            if not isinstance(value, dict):
                problems.append(Problem(key, "expected a table"))
                continue
            for sub, subvalue in value.items():
                name = f"{key}.{sub}"
                if sub not in _FILE_KEYS[key]:
                    problems.append(Problem(name, f"unknown setting in {path}"))
                else:
                    raw[name] = (name, subvalue)
        else:
            raw[key] = (key, value)


GROUP_BY_DIMENSIONS = (
    "model",
    "workspace_id",
    "api_key_id",
    "service_tier",
    "context_window",
    "inference_geo",
)
ADMIN_SOURCES = ("usage", "cost", "claude_code", "names")


def _web(
    raw: Mapping[str, tuple[str, Any]], values: dict[str, Any], problems: list[Problem]
) -> None:
    """TLS files and basic-auth users (bcrypt hashes) for the HTTP pages."""
    for key, attr in (
        ("web.tls_cert_file", "web_tls_cert_file"),
        ("web.tls_key_file", "web_tls_key_file"),
    ):
        if key in raw:
            path = Path(str(raw[key][1])).expanduser()
            if not path.is_file():
                problems.append(Problem(key, f"{path} does not exist"))
            values[attr] = path
    if "web.basic_auth_users" in raw:
        where, table = raw["web.basic_auth_users"]
        if not isinstance(table, dict):
            problems.append(Problem(where, "expected a table of user = bcrypt hash"))
            return
        users: dict[str, str] = {}
        for user, hashed in table.items():
            if not isinstance(hashed, str) or not hashed.startswith(("$2a$", "$2b$", "$2y$")):
                problems.append(Problem(f"{where}.{user}", "expected a bcrypt hash ($2b$…)"))
            else:
                users[str(user)] = hashed
        values["web_basic_auth_users"] = users


def _flag(value: object) -> bool | None:
    """A boolean setting from TOML (true/false) or the environment (on/off, 1/0, …)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "on", "true", "yes"):
        return True
    if text in ("0", "off", "false", "no"):
        return False
    return None


def _list(value: object) -> list[str] | None:
    """A TOML list of strings, or a comma-separated string (environment)."""
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    return None


def _budgets(entry: tuple[str, Any], values: dict[str, Any], problems: list[Problem]) -> None:
    where, table = entry
    if not isinstance(table, dict):
        problems.append(Problem(where, "expected a table"))
        return
    for key, amount in table.items():
        if key == "organization":
            if isinstance(amount, bool) or not isinstance(amount, int | float) or amount < 0:
                problems.append(Problem(f"{where}.organization", "expected a USD amount"))
            else:
                values["budget_organization"] = float(amount)
        elif key == "workspaces" and isinstance(amount, dict):
            budgets = {}
            for ws, usd in amount.items():
                if isinstance(usd, bool) or not isinstance(usd, int | float) or usd < 0:
                    problems.append(Problem(f"{where}.workspaces.{ws}", "expected a USD amount"))
                else:
                    budgets[str(ws)] = float(usd)
            values["budget_workspaces"] = budgets
        else:
            problems.append(Problem(f"{where}.{key}", "unknown budget setting"))


def _parse_listen(value: str) -> tuple[str, int] | None:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        return None
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


def _number(
    raw: Mapping[str, tuple[str, Any]],
    name: str,
    attr: str,
    kind: type,
    minimum: float,
    values: dict[str, Any],
    problems: list[Problem],
) -> None:
    if name not in raw:
        return
    where, value = raw[name]
    try:
        if isinstance(value, bool):
            raise ValueError
        number = kind(value)
    except (TypeError, ValueError):
        problems.append(Problem(where, f"expected a number, got {value!r}"))
        return
    if number < minimum:
        problems.append(Problem(where, f"must be at least {minimum}"))
        return
    values[attr] = number


def _secret(
    env: Mapping[str, str], var: str, file_setting: tuple[str, Any] | None, problems: list[Problem]
) -> str | None:
    """Read a secret from ``VAR``, ``VAR_FILE`` or a config ``*_file`` setting (in that order).

    Only the setting's name ever appears in a problem message, never the value.
    """
    if env.get(var):
        return env[var].strip()
    sources = []
    if env.get(var + "_FILE"):
        sources.append((var + "_FILE", env[var + "_FILE"]))
    if file_setting is not None:
        sources.append((file_setting[0], str(file_setting[1])))
    for where, path in sources:
        try:
            secret = Path(path).expanduser().read_text(encoding="utf-8").strip()
        except OSError as exc:
            problems.append(Problem(where, f"cannot read secret file: {exc.strerror}"))
            return None
        if not secret:
            problems.append(Problem(where, "secret file is empty"))
            return None
        return secret
    return None
