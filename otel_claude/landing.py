"""The landing page ``/``: a small server-rendered HTML summary of the running exporter.

``LandingData.view()`` reads in-memory state only (the ledger's counter totals, source health,
the latest Admin API cost answer): no SQL, so ``/`` stays fast under load. ``render_landing``
is a pure function of the resulting ``LandingView``; every text it prints is escaped, it loads
nothing from the network and runs no script. Each figure carries ``id``, ``data-metric`` (the
Prometheus series it is computed from) and ``data-value`` (the exact number) for tests and
scrapers; the visible text is rounded for reading.
"""

from __future__ import annotations

import html
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING

from otel_claude import __version__
from otel_claude.admin.cost import SOURCE as COST_SOURCE
from otel_claude.admin.cost import CostReport
from otel_claude.admin.usage import API_TOKENS
from otel_claude.admin.usage import SOURCE as USAGE_SOURCE
from otel_claude.health import SourceHealth, SourceState
from otel_claude.ledger import COST, TOKENS, CounterKey, Ledger
from otel_claude.records import TOKEN_TYPES

if TYPE_CHECKING:
    from otel_claude.admin.poller import Report
    from otel_claude.app import App

REFRESH_S = 30
REPO_URL = "https://github.com/otel-claude/otel-claude"
LINKS: tuple[tuple[str, str, str], ...] = (
    ("/metrics", "/metrics", "Prometheus exposition (OpenMetrics with Accept header)"),
    ("/healthz", "/healthz", "liveness"),
    ("/readyz", "/readyz", "readiness: every source finished its first pass"),
    (f"{REPO_URL}/tree/main/grafana/dashboards", "Grafana dashboards", "JSON, on GitHub"),
    (f"{REPO_URL}#readme", "README", "metrics, labels, configuration"),
    (f"{REPO_URL}/blob/main/docs/runbook.md", "Runbook", "alerts and what to do"),
)
TOKEN_LABELS = {
    "input": "input (uncached)",
    "output": "output",
    "cache_read": "cache read",
    "cache_creation_5m": "cache write, 5 min",
    "cache_creation_1h": "cache write, 1 h",
}
_PICO_PER_USD = 12  # ledger cost unit: 10**-12 USD


@dataclass(frozen=True)
class SourceView:
    """One source as the page shows it."""

    name: str
    state: str  # "waiting" (first pass not finished), "up" or "down"
    last_success: float | None = None
    last_duration: float | None = None
    last_error: str | None = None
    newest_data: float | None = None  # end of the newest complete bucket (Admin API reports)


@dataclass(frozen=True)
class BilledCost:
    """Billed cost from the Admin API cost report, summed over workspaces (None: not polled)."""

    today_usd: Decimal | None = None
    month_usd: Decimal | None = None


@dataclass(frozen=True)
class LandingView:
    """Everything ``render_landing`` prints. Holds no secret: names, states and numbers only."""

    version: str
    now: float
    sources: tuple[SourceView, ...] = ()
    #: ``claude_agent_tokens_total`` summed by ``token_type`` (None: no ledger attached).
    client_tokens: Mapping[str, int] | None = None
    client_estimated_pico: int = 0  # ``claude_agent_cost_usd_total{cost_source="estimated"}``
    client_reported_pico: int = 0  # ``...{cost_source="reported"}`` (SDK result messages)
    #: ``anthropic_api_tokens_total`` summed by ``token_type`` (None: usage report off).
    api_tokens: Mapping[str, int] | None = None
    billed: BilledCost | None = None  # None: the Admin API cost report is off


def tokens_by_type(snapshot: Mapping[CounterKey, int], family: str) -> dict[str, int]:
    """Sum a token family over every label but ``token_type`` (label ``index``)."""
    index = 1 if family == TOKENS else 0  # tokens: (model, token_type, ...); api: (token_type,…)
    out = dict.fromkeys(TOKEN_TYPES, 0)
    for (key, labels), value in snapshot.items():
        if key == family:
            out[labels[index]] = out.get(labels[index], 0) + value
    return out


def cache_hit_ratio(tokens: Mapping[str, int]) -> float | None:
    """cache_read / (input + cache_read + cache writes); None when no input token was seen."""
    read = tokens.get("cache_read", 0)
    total = (
        tokens.get("input", 0)
        + read
        + tokens.get("cache_creation_5m", 0)
        + tokens.get("cache_creation_1h", 0)
    )
    return read / total if total else None


def build_view(
    *,
    now: float,
    states: Mapping[str, SourceState],
    snapshot: Mapping[CounterKey, int] | None,
    cost: CostReport | None = None,
    newest_data: Mapping[str, float] | None = None,
    version: str = __version__,
) -> LandingView:
    """Assemble the view from in-memory state (pure; ``LandingData.view`` gathers the inputs)."""
    fresh = newest_data or {}
    sources = tuple(
        SourceView(
            name=name,
            state="waiting" if not s.ready else "up" if s.up else "down",
            last_success=s.last_success,
            last_duration=s.last_duration,
            last_error=s.last_error,
            newest_data=fresh.get(name),
        )
        for name, s in sorted(states.items())
    )
    client_tokens = api_tokens = None
    estimated = reported = 0
    if snapshot is not None:
        client_tokens = tokens_by_type(snapshot, TOKENS)
        for (key, labels), value in snapshot.items():
            if key == COST and labels[1] == "estimated":
                estimated += value
            elif key == COST and labels[1] == "reported":
                reported += value
        if USAGE_SOURCE in states or any(key == API_TOKENS for key, _ in snapshot):
            api_tokens = tokens_by_type(snapshot, API_TOKENS)
    billed = None
    if cost is not None:
        polled = states.get(COST_SOURCE)
        if polled is not None and polled.last_success is not None:
            billed = BilledCost(
                sum(cost.today_usd.values(), Decimal(0)), sum(cost.month_usd.values(), Decimal(0))
            )
        else:
            billed = BilledCost()
    return LandingView(
        version=version,
        now=now,
        sources=sources,
        client_tokens=client_tokens,
        client_estimated_pico=estimated,
        client_reported_pico=reported,
        api_tokens=api_tokens,
        billed=billed,
    )


class LandingData:
    """Where the landing page reads from; ``view()`` touches memory only (no SQL, no I/O)."""

    def __init__(
        self,
        health: SourceHealth,
        *,
        ledger: Ledger | None = None,
        cost: CostReport | None = None,
        reports: Sequence[Report] = (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._health = health
        self._ledger = ledger
        self._cost = cost
        self._reports = tuple(reports)
        self._clock = clock

    @classmethod
    def for_app(cls, app: App, *, clock: Callable[[], float] = time.time) -> LandingData:
        """The landing data of a built exporter (ledger, health, its Admin API reports)."""
        cost = next((r for r in app.reports if isinstance(r, CostReport)), None)
        return cls(app.health, ledger=app.ledger, cost=cost, reports=app.reports, clock=clock)

    def view(self) -> LandingView:
        """The current view."""
        newest: dict[str, float] = {}
        for report in self._reports:
            value = getattr(report, "newest_complete", None)
            if isinstance(value, float | int):
                newest[report.name] = float(value)
        return build_view(
            now=self._clock(),
            states=self._health.states(),
            snapshot=self._ledger.snapshot() if self._ledger is not None else None,
            cost=self._cost,
            newest_data=newest,
        )


# --- rendering ----------------------------------------------------------------------------

_CSS = """
:root{color-scheme:light dark;--fg:#1c2230;--muted:#5d6677;--bg:#f5f6f8;--card:#fff;
--line:#dfe3ea;--ok:#1a7f37;--bad:#c62828;--wait:#9a6700;--accent:#3f3fc8}
@media (prefers-color-scheme:dark){:root{--fg:#e6e8ec;--muted:#9aa3b2;--bg:#14161a;
--card:#1d2026;--line:#2f343d;--ok:#3fb15f;--bad:#ef5350;--wait:#c99a1c;--accent:#9d9dff}}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);
font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Liberation Sans",sans-serif}
main{max-width:980px;margin:0 auto;padding:16px}
header{display:flex;flex-wrap:wrap;align-items:center;gap:6px 14px}
h1{font-size:1.45rem;margin:0}
h2{font-size:1.05rem;margin:26px 0 8px}
p{margin:6px 0}
.muted{color:var(--muted)}
.small{font-size:.85rem}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(200px,1fr));gap:12px}
.card{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:12px 14px}
.card .label{font-size:.78rem;color:var(--muted);text-transform:uppercase;letter-spacing:.04em}
.card .value{display:block;font-size:1.65rem;font-weight:650;font-variant-numeric:tabular-nums;
margin:2px 0}
.scroll{overflow-x:auto;background:var(--card);border:1px solid var(--line);border-radius:8px}
table{border-collapse:collapse;width:100%}
th,td{padding:7px 12px;text-align:left;border-bottom:1px solid var(--line);white-space:nowrap}
th{font-size:.8rem;color:var(--muted);font-weight:600;white-space:normal}
th small{font-weight:400}
td.wrap{white-space:normal}
@media (max-width:600px){main{padding:12px 10px}th,td{padding:6px 8px}}
tbody tr:last-child td{border-bottom:0}
.num{text-align:right;font-variant-numeric:tabular-nums}
tr.sum td{font-weight:650}
.pill{display:inline-block;padding:1px 9px;border-radius:999px;font-size:.78rem;font-weight:650;
color:#fff}
.up{background:var(--ok)}.down{background:var(--bad)}.waiting{background:var(--wait)}
a{color:var(--accent)}
ul.links{padding-left:20px;margin:0}
ul.links li{margin:3px 0}
footer{margin:26px 0 6px;font-size:.82rem;color:var(--muted)}
"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _usd(value: Decimal) -> str:
    if abs(value) >= 1 or value == 0:
        return f"${value:,.2f}"
    return f"${value:,.4f}"


def _pico_usd(pico: int) -> Decimal:
    return Decimal(pico).scaleb(-_PICO_PER_USD)


def _figure(
    tag: str,
    ident: str,
    metric: str,
    value: object | None,
    text: str,
    *,
    css: str = "",
    extra: Mapping[str, str] | None = None,
) -> str:
    """An element carrying one figure; ``data-value`` is absent when the figure is unknown."""
    attrs = [f'id="{_e(ident)}"', f'data-metric="{_e(metric)}"']
    attrs += [f'data-{_e(k)}="{_e(v)}"' for k, v in (extra or {}).items()]
    if isinstance(value, Decimal):
        value = format(value.normalize(), "f")  # exact, without exponent or trailing zeros
    if value is not None:
        attrs.append(f'data-value="{_e(value)}"')
    if css:
        attrs.append(f'class="{_e(css)}"')
    return f"<{tag} {' '.join(attrs)}>{_e(text)}</{tag}>"


def _when(t: float | None, now: float) -> str:
    """A table cell for a timestamp: the age, and the exact UTC time under it."""
    if t is None:
        return "<td>—</td>"
    stamp = datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    iso = datetime.fromtimestamp(t, UTC).isoformat()
    return (
        f'<td><time datetime="{_e(iso)}">{_e(_age(now - t))}'
        f'<br><span class="muted small">{_e(stamp)}</span></time></td>'
    )


def _age(seconds: float) -> str:
    if seconds < -1:
        return "in the future"
    seconds = max(seconds, 0.0)
    if seconds < 60:
        return f"{seconds:.0f} s ago"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h ago"
    return f"{seconds / 86400:.0f} d ago"


def _card(label: str, figure: str, note: str) -> str:
    return (
        f'<div class="card"><span class="label">{_e(label)}</span>{figure}'
        f'<span class="muted small">{_e(note)}</span></div>'
    )


def _cost_cards(view: LandingView) -> str:
    cards = []
    if view.billed is None:
        cards.append(
            '<div class="card"><span class="label">Billed cost</span>'
            '<span class="value muted">off</span><span class="muted small">'
            "set ANTHROPIC_ADMIN_API_KEY to read the Admin API cost report</span></div>"
        )
    else:
        for ident, metric, label, usd in (
            (
                "billed-today-usd",
                "anthropic_api_cost_today_usd",
                "Billed today",
                view.billed.today_usd,
            ),
            (
                "billed-month-usd",
                "anthropic_api_cost_month_to_date_usd",
                "Billed month to date",
                view.billed.month_usd,
            ),
        ):
            note = "Admin API cost report, UTC, all workspaces"
            if usd is None:
                note = "waiting for the first successful cost report poll"
            figure = _figure(
                "span", ident, metric, usd, "—" if usd is None else _usd(usd), css="value"
            )
            cards.append(_card(label, figure, note))
    if view.client_tokens is not None:
        estimated = _pico_usd(view.client_estimated_pico)
        cards.append(
            _card(
                "Client-side estimate",
                _figure(
                    "span",
                    "client-cost-estimated-usd",
                    "claude_agent_cost_usd_total",
                    estimated,
                    _usd(estimated),
                    css="value",
                    extra={"cost-source": "estimated"},
                ),
                "price table times counted tokens; not billing data",
            )
        )
        if view.client_reported_pico:
            reported = _pico_usd(view.client_reported_pico)
            cards.append(
                _card(
                    "Reported by the SDK",
                    _figure(
                        "span",
                        "client-cost-reported-usd",
                        "claude_agent_cost_usd_total",
                        reported,
                        _usd(reported),
                        css="value",
                        extra={"cost-source": "reported"},
                    ),
                    "result messages' costUSD; client-side estimate",
                )
            )
    return f'<div class="cards">{"".join(cards)}</div>'


def _ratio_text(ratio: float | None) -> str:
    return "—" if ratio is None else f"{ratio * 100:.1f} %"


def _tokens_table(view: LandingView) -> str:
    columns: list[tuple[str, str, Mapping[str, int]]] = []
    if view.client_tokens is not None:
        columns.append(("client", "claude_agent_tokens_total", view.client_tokens))
    if view.api_tokens is not None:
        columns.append(("api", "anthropic_api_tokens_total", view.api_tokens))
    if not columns:
        return '<p class="muted">No token figures: this server has no ledger attached.</p>'
    heads = {"client": ("Client-side", "counted messages"), "api": ("Admin API", "billed usage")}
    head = "".join(
        f'<th class="num">{_e(heads[name][0])}<br><small>{_e(heads[name][1])}</small></th>'
        for name, _, _ in columns
    )
    types = list(TOKEN_TYPES) + sorted(
        {t for _, _, tokens in columns for t in tokens} - set(TOKEN_TYPES)
    )
    rows = []
    for token_type in types:
        cells = "".join(
            _figure(
                "td",
                f"{name}-tokens-{token_type}",
                metric,
                tokens.get(token_type, 0),
                f"{tokens.get(token_type, 0):,}",
                css="num",
                extra={"token-type": token_type},
            )
            for name, metric, tokens in columns
        )
        label = _e(TOKEN_LABELS.get(token_type, token_type))
        rows.append(f'<tr><td class="wrap">{label}</td>{cells}</tr>')
    totals = "".join(
        _figure(
            "td",
            f"{name}-tokens-total",
            metric,
            sum(tokens.values()),
            f"{sum(tokens.values()):,}",
            css="num",
        )
        for name, metric, tokens in columns
    )
    rows.append(f'<tr class="sum"><td>all types</td>{totals}</tr>')
    ratios = []
    for name, metric, tokens in columns:
        ratio = cache_hit_ratio(tokens)
        ratios.append(
            _figure(
                "td",
                f"{name}-cache-hit-ratio",
                metric,
                None if ratio is None else repr(ratio),
                _ratio_text(ratio),
                css="num",
            )
        )
    rows.append(f'<tr class="sum"><td>cache hit ratio</td>{"".join(ratios)}</tr>')
    return (
        f'<div class="scroll"><table><thead><tr><th>token type</th>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
        '<p class="muted small">Totals of the exporter\'s counters (everything counted so far). '
        "Cache hit ratio = cache read / (input + cache read + cache writes), per column; "
        "the two columns are different views of usage and are never added together.</p>"
    )


def _sources_table(view: LandingView) -> str:
    if not view.sources:
        return '<p class="muted">No source enabled.</p>'
    rows = []
    for s in view.sources:
        duration = "—" if s.last_duration is None else f"{s.last_duration:.2f} s"
        rows.append(
            f'<tr id="source-{_e(s.name)}" data-state="{_e(s.state)}">'
            f"<td>{_e(s.name)}</td>"
            f'<td><span class="pill {_e(s.state)}">{_e(s.state)}</span></td>'
            f"{_when(s.last_success, view.now)}{_when(s.newest_data, view.now)}"
            f'<td class="num">{_e(duration)}</td>'
            f"<td>{_e(s.last_error or '—')}</td></tr>"
        )
    return (
        '<div class="scroll"><table><thead><tr><th>source</th><th>state</th>'
        "<th>last success</th><th>data up to</th><th>last pass</th><th>last error</th>"
        f"</tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
    )


def _status(view: LandingView) -> str:
    waiting = [s.name for s in view.sources if s.state == "waiting"]
    down = [s.name for s in view.sources if s.state == "down"]
    if down:
        css, text = "down", "degraded: " + ", ".join(down) + " down"
    elif waiting:
        css, text = "waiting", "starting: waiting for " + ", ".join(waiting)
    else:
        css, text = "up", "ready"
    return f'<span id="status" class="pill {css}" data-status="{css}">{_e(text)}</span>'


def render_landing(view: LandingView) -> str:
    """The HTML page for ``view`` (inline CSS, no script, every text escaped)."""
    rendered = datetime.fromtimestamp(view.now, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    links = "".join(
        f'<li><a href="{_e(href)}">{_e(text)}</a> <span class="muted">— {_e(note)}</span></li>'
        for href, text, note in LINKS
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="refresh" content="{REFRESH_S}">
<link rel="icon" href="data:,">
<title>otel-claude {_e(view.version)}</title>
<style>{_CSS}</style></head>
<body><main>
<header><h1>otel-claude</h1>
<span id="version" class="muted" data-value="{_e(view.version)}">v{_e(view.version)}</span>
{_status(view)}</header>
<p class="muted">Exact Claude usage, prompt-cache and cost metrics for Prometheus and OTLP.</p>
<h2>Cost</h2>
{_cost_cards(view)}
<h2>Tokens</h2>
{_tokens_table(view)}
<h2>Sources</h2>
{_sources_table(view)}
<h2>Links</h2>
<ul class="links">{links}
<li><code>POST /v1/events</code> <span class="muted">— SDK / stream-json messages</span></li>
</ul>
<footer>Rendered {_e(rendered)} from in-memory totals; refreshes every {REFRESH_S} s.</footer>
</main></body></html>
"""
