"""The cached /metrics text: byte-identical to prometheus-client, re-rendered on every change.

The reference is what the collector did before the cache: a ``CounterMetricFamily`` per
family from ``family_series``, encoded by prometheus-client itself.
"""

from __future__ import annotations

import gzip
import itertools
import random
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import replace

import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.openmetrics import exposition as openmetrics
from prometheus_client.registry import Collector

from otel_claude import ledger as ledger_mod
from otel_claude.admin import cost, usage
from otel_claude.exposition.counters import CounterText, Format, Listed
from otel_claude.exposition.families import (
    FAMILIES,
    Family,
    admin_families,
    core_families,
    family_series,
)
from otel_claude.exposition.health import HealthCollector
from otel_claude.exposition.page import MetricsPage
from otel_claude.exposition.prometheus import LedgerCollector
from otel_claude.health import SourceHealth
from otel_claude.ledger import BucketValue, Ledger
from otel_claude.server import ExporterServer, IngestEndpoint

ODD = (
    "plain",
    'with "quotes"',
    "back\\slash",
    "trailing\\",
    "new\nline",
    "\\n literal",
    "tab\there",
    "ünïcødé ✓ 日本語 🚀",
    "",
    '{}=,"\\\n',
)
BIG = (1, 999_999, 1_234_567, 2**53 + 1, 10**15 + 7, 10**20, 123_456_789_012_345_678)
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)
ACCEPTS = (
    "",
    "*/*",
    PROMETHEUS_ACCEPT,
    "application/openmetrics-text",
    "application/openmetrics-text; version=1.0.0",
    "text/plain;version=0.0.4",
    "text/plain;version=1.0.0;escaping=underscores",
    # Not cached: prometheus-client renders these whole (through the lazy samples).
    "text/plain;version=1.0.0;escaping=allow-utf-8",
    "text/plain;version=1.0.0;escaping=dots",
    "application/openmetrics-text;version=2.0.0",
)
FULL = FAMILIES + admin_families(usage.DIMENSIONS, "hash")
SUMMING = core_families(True) + admin_families(("model", "workspace_id"), "drop")


class Reference(Collector):
    """The collector as it was before the cache: every family rebuilt from a snapshot."""

    def __init__(self, ledger: Ledger, families: Sequence[Family]) -> None:
        self._ledger = ledger
        self._families = families

    def collect(self) -> Iterator[Metric]:
        snapshot = self._ledger.snapshot()
        for family in self._families:
            metric = CounterMetricFamily(family.name, family.help, labels=family.labels)
            for labels, value in sorted(family_series(family, snapshot).items()):
                metric.add_metric(labels, family.value(value))
            yield metric


class Commits:
    """Adds to counters through ``apply_buckets`` (a new bucket per addition)."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self._bucket = itertools.count()

    def add(self, items: Iterable[tuple[str, tuple[str, ...], int]]) -> None:
        values = []
        for family, labels, value in items:
            bucket = f"b{next(self._bucket)}"
            values.append(BucketValue("test", bucket, "g", family, labels, value))
        self.ledger.apply_buckets(values)


def usage_labels(rng: random.Random, odd: bool = True) -> tuple[str, ...]:
    pick = ODD if odd else ("a", "b", "c")
    return (
        rng.choice(("claude-opus-4-6", "claude-haiku-4-5", *pick)),
        rng.choice(("wrkspc_01", "default", *pick)),
        rng.choice(("apikey_01", "console", *pick)),
        rng.choice(("standard", "batch")),
        rng.choice(("0-200k", "200k-1M")),
        rng.choice(("global", "us", *pick)),
    )


def random_items(rng: random.Random, count: int) -> list[tuple[str, tuple[str, ...], int]]:
    """Counter additions over every kind of family: plain, summed by select, divided, relabeled."""
    items: list[tuple[str, tuple[str, ...], int]] = []
    token_types = [name for name, _path in usage.TOKEN_FIELDS]
    for _ in range(count):
        kind = rng.randrange(8)
        value = rng.choice(BIG) if rng.random() < 0.3 else rng.randint(1, 50_000)
        if kind == 0:
            labels = (rng.choice(token_types), *usage_labels(rng))
            items.append((usage.API_TOKENS, labels, value))
        elif kind == 1:
            items.append((usage.API_WEB_SEARCH, usage_labels(rng), rng.randint(1, 9)))
        elif kind == 2:
            labels = (
                rng.choice(("wrkspc_01", *ODD)),
                rng.choice(("tokens", "web_search")),
                rng.choice(("claude-opus-4-6", *ODD)),
                rng.choice(token_types),
                "standard",
                "0-200k",
            )
            items.append((cost.API_COST, labels, value))
        elif kind == 3:
            project = rng.choice(("proj-a", "proj-b", *ODD))
            labels = (rng.choice(("m1", *ODD)), rng.choice(token_types), "ingest", project)
            items.append((ledger_mod.TOKENS, labels, value))
        elif kind == 4:
            labels = (rng.choice(("m1", *ODD)), rng.choice(("estimated", "reported")), "p")
            items.append((ledger_mod.COST, labels, value))
        elif kind == 5:
            family = rng.choice((usage.API_TOKENS, "cc_tokens", "unknown_family"))
            items.append((ledger_mod.SERIES_FOLDED, (family,), rng.randint(1, 3)))
        elif kind == 6:
            labels = (rng.choice(("actor-1", *ODD)), rng.choice(("m1", "m2")), "input")
            items.append(("cc_tokens", labels, value))
        else:
            labels = (rng.choice(("actor-1", *ODD)), rng.choice(("m1", *ODD)))
            items.append(("cc_cost_pico", labels, value))
    return items


def fast(counters: CounterText, fmt: Format) -> bytes:
    text = b"".join(m.head(fmt) + m.body for m in counters.metrics())
    return text + b"# EOF\n" if fmt is Format.OPENMETRICS else text


def assert_same(counters: CounterText, ledger: Ledger, families: Sequence[Family]) -> None:
    reference = Reference(ledger, families)
    assert fast(counters, Format.TEXT) == generate_latest(reference)
    assert fast(counters, Format.OPENMETRICS) == openmetrics.generate_latest(reference)
    # The samples built on demand for any other reader are the reference's, too.
    assert list(counters.metrics()) == list(reference.collect())


@pytest.fixture
def ledger(make_ledger: Callable[..., Ledger]) -> Ledger:
    return make_ledger(synchronous="off")


@pytest.mark.parametrize("families", [FULL, SUMMING], ids=["full", "summing"])
def test_text_equals_prometheus_client(ledger: Ledger, families: Sequence[Family]) -> None:
    counters = CounterText(ledger, families)
    assert_same(counters, ledger, families)  # empty: HELP and TYPE lines only
    Commits(ledger).add(random_items(random.Random(1), 400))
    assert_same(counters, ledger, families)
    text = fast(counters, Format.TEXT).decode()
    assert 'workspace_id="with \\"quotes\\""' in text
    assert 'model="new\\nline"' in text
    assert "1e+20" in text and "1.234567e+06" in text


@pytest.mark.parametrize("seed", [2, 3, 4])
def test_every_change_is_rendered(ledger: Ledger, seed: int) -> None:
    """Small and large commits, new series first or last in sort order, sums, twins."""
    rng = random.Random(seed)
    commits = Commits(ledger)
    full, summing = CounterText(ledger, FULL), CounterText(ledger, SUMMING)
    for step in range(25):
        # Step 1 brings more new series to a family than are inserted one by one.
        count = 800 if step == 1 else rng.choice((1, 1, 2, 5, 100))
        commits.add(random_items(rng, count))
        if step % 4 == 0:  # a downward revision: the *_revised_down twin gains a series
            labels = ("input", *usage_labels(rng, odd=False))
            ledger.apply_buckets([BucketValue("rev", "b", "g", usage.API_TOKENS, labels, 9)])
            ledger.apply_buckets([BucketValue("rev", "b", "g", usage.API_TOKENS, labels, 4)])
        assert_same(full, ledger, FULL)
        if step % 3 == 0:  # also a renderer that skips versions
            assert_same(summing, ledger, SUMMING)


def test_cache_is_reused_until_a_commit_changes_totals(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    commits = Commits(ledger)
    commits.add(random_items(random.Random(5), 200))
    counters = CounterText(ledger, FULL)
    first = counters.metrics()
    snapshots = 0
    real = ledger.snapshot

    def counting() -> dict[ledger_mod.CounterKey, int]:
        nonlocal snapshots
        snapshots += 1
        return real()

    monkeypatch.setattr(ledger, "snapshot", counting)
    assert all(a is b for a, b in zip(counters.metrics(), first, strict=True))
    assert snapshots == 0

    # A commit that changes no total (the same bucket value served again) bumps nothing.
    version = ledger.version
    served = BucketValue("same", "b", "g", usage.API_WEB_SEARCH, usage_labels(random.Random(6)), 3)
    ledger.apply_buckets([served])
    assert ledger.version > version
    version = ledger.version
    ledger.apply_buckets([served])
    assert ledger.version == version
    second = counters.metrics()
    assert snapshots == 1
    changed = [f.name for f, a, b in zip(FULL, first, second, strict=True) if a is not b]
    assert changed == ["anthropic_api_web_search_requests"]
    assert all(a is b for a, b in zip(counters.metrics(), second, strict=True))
    assert snapshots == 1
    assert_same(counters, ledger, FULL)


def test_a_failed_render_is_not_applied_twice(ledger: Ledger) -> None:
    """An exception mid-render starts over next time instead of adding increments again."""
    failures = [1]

    def flaky(labels: tuple[str, ...]) -> tuple[str, ...]:
        if labels == ("boom",) and failures:
            failures.pop()
            raise RuntimeError("flaky relabel")
        return labels

    family = Family("f", "flaky_things", "flaky.things", "{thing}", "Things.", ("kind",))
    family = replace(family, relabel=flaky)
    commits = Commits(ledger)
    commits.add([("f", ("a",), 5)])
    counters = CounterText(ledger, [family])
    assert_same(counters, ledger, [family])
    commits.add([("f", ("a",), 2), ("f", ("boom",), 7)])
    with pytest.raises(RuntimeError, match="flaky relabel"):
        counters.metrics()
    assert_same(counters, ledger, [family])
    assert b'flaky_things_total{kind="a"} 7.0\n' in fast(counters, Format.TEXT)


def test_names_that_would_need_escaping_are_refused(ledger: Ledger) -> None:
    family = Family("k", "ok_name", "ok.name", "{x}", "Help.", ("__reserved",))
    with pytest.raises(ValueError, match="__reserved"):
        CounterText(ledger, [family])
    with pytest.raises(ValueError, match="with:colon"):
        CounterText(ledger, [replace(family, name="with:colon", labels=())])


def _registry(ledger: Ledger, *, health_first: bool = False) -> CollectorRegistry:
    health = SourceHealth()
    health.enable("ingest", ready=True)
    collectors: list[Collector] = [LedgerCollector(ledger, families=FULL), HealthCollector(health)]
    registry = CollectorRegistry(auto_describe=False)
    for collector in reversed(collectors) if health_first else collectors:
        registry.register(collector)
    return registry


@pytest.mark.parametrize("accept", ACCEPTS)
def test_page_equals_prometheus_client_encoders(ledger: Ledger, accept: str) -> None:
    Commits(ledger).add(random_items(random.Random(7), 300))
    registry = _registry(ledger)
    encoder, content_type = choose_encoder(accept)
    page = MetricsPage()
    answer = page.render(registry, accept)
    assert answer.content_type == content_type
    assert answer.headers == {}
    assert answer.body() == encoder(registry)
    assert answer.length == len(answer.body())
    Commits(ledger).add(random_items(random.Random(8), 3))
    assert page.render(registry, accept).body() == encoder(registry)


@pytest.mark.parametrize("accept", ["", PROMETHEUS_ACCEPT])
@pytest.mark.parametrize("health_first", [False, True], ids=["counters-first", "gauges-first"])
def test_gzip_round_trips_and_reuses_the_compressed_counters(
    ledger: Ledger, accept: str, health_first: bool
) -> None:
    commits = Commits(ledger)
    commits.add(random_items(random.Random(9), 300))
    registry = _registry(ledger, health_first=health_first)
    page = MetricsPage()
    first = page.render(registry, accept, "gzip")
    assert first.headers == {"Content-Encoding": "gzip"}
    assert gzip.decompress(first.body()) == page.render(registry, accept).body()
    again = page.render(registry, accept, "deflate, gzip;q=0.8")
    assert gzip.decompress(again.body()) == page.render(registry, accept).body()
    if health_first:  # nothing cached leads the body: all of it is compressed each time
        assert len(first.parts) == len(again.parts) == 1
    else:  # the compressed counter text is reused while the ledger is unchanged
        assert len(first.parts) == 2 and again.parts[0] is first.parts[0]
    commits.add(random_items(random.Random(10), 2))
    changed = page.render(registry, accept, "gzip")
    assert changed.parts[0] is not first.parts[0]
    assert gzip.decompress(changed.body()) == choose_encoder(accept)[0](registry)
    assert page.render(registry, accept, "br, identity").headers == {}


def test_slow_path_gzip(ledger: Ledger) -> None:
    Commits(ledger).add(random_items(random.Random(11), 50))
    registry = _registry(ledger)
    accept = "text/plain;version=1.0.0;escaping=allow-utf-8"
    answer = MetricsPage().render(registry, accept, "gzip")
    assert gzip.decompress(answer.body()) == choose_encoder(accept)[0](registry)


def test_lazy_samples_serve_other_readers(ledger: Ledger) -> None:
    labels = ("input", "claude-opus-4-6", "wrkspc_01", "console", "standard", "0-200k", "us")
    Commits(ledger).add([(usage.API_TOKENS, labels, 10**20)])
    registry = _registry(ledger)
    MetricsPage().render(registry, "")  # the text is cached; samples were never built
    names = ("token_type", *usage.DIMENSIONS)
    value = registry.get_sample_value(
        "anthropic_api_tokens_total", dict(zip(names, labels, strict=True))
    )
    assert value == float(10**20)


def test_concurrent_scrapes_during_commits(ledger: Ledger) -> None:
    commits = Commits(ledger)
    commits.add(random_items(random.Random(12), 100))
    registry = _registry(ledger)
    page = MetricsPage()
    errors: list[BaseException] = []
    done = threading.Event()

    def scrape() -> None:
        try:
            while not done.is_set():
                body = gzip.decompress(page.render(registry, PROMETHEUS_ACCEPT, "gzip").body())
                assert body.endswith(b"# EOF\n")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=scrape) for _ in range(4)]
    for thread in threads:
        thread.start()
    rng = random.Random(13)
    for _ in range(30):
        commits.add(random_items(rng, 3))
    done.set()
    for thread in threads:
        thread.join()
    assert errors == []
    accept = PROMETHEUS_ACCEPT
    assert page.render(registry, accept).body() == choose_encoder(accept)[0](registry)


def test_metrics_over_http(ledger: Ledger) -> None:
    Commits(ledger).add(random_items(random.Random(14), 200))
    registry = _registry(ledger)
    sources = SourceHealth()
    server = ExporterServer(
        ("127.0.0.1", 0),
        registry=registry,
        ingest=IngestEndpoint(ledger, token=None, max_bytes=1 << 20),
        sources=sources,
    )
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/metrics"
    try:
        with httpx.Client(trust_env=False) as client:
            plain = client.get(url, headers={"Accept-Encoding": "identity"})
            assert "content-encoding" not in plain.headers
            assert plain.content == generate_latest(registry)
            zipped = client.get(url, headers={"Accept-Encoding": "gzip"})
            assert zipped.headers["content-encoding"] == "gzip"
            assert int(zipped.headers["content-length"]) < len(plain.content)
            assert zipped.content == plain.content  # httpx decompressed it
            om = client.get(url, headers={"Accept": PROMETHEUS_ACCEPT, "Accept-Encoding": "gzip"})
            assert om.content == choose_encoder(PROMETHEUS_ACCEPT)[0](registry)
            assert om.headers["content-type"] == (
                "application/openmetrics-text; version=1.0.0; charset=utf-8; escaping=underscores"
            )
            head = client.head(url, headers={"Accept-Encoding": "identity"})
            assert head.headers["content-length"] == str(len(plain.content))
            assert head.content == b""
            assert client.get(url).status_code == 200  # the connection is still usable
    finally:
        server.shutdown()
        server.server_close()


def test_listed_collects_what_it_was_given() -> None:
    metric = CounterMetricFamily("x", "X.", value=1)
    assert list(Listed([metric]).collect()) == [metric]
