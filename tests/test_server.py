"""POST /v1/events and the other endpoints, over real loopback HTTP."""

from __future__ import annotations

import json
import socket
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry

from otel_claude.exposition.health import HealthCollector
from otel_claude.exposition.prometheus import LedgerCollector
from otel_claude.health import SourceHealth
from otel_claude.ledger import Ledger
from otel_claude.server import ExporterServer, IngestEndpoint
from tests.streams import GARBAGE, generate

TOKEN = "s3cret-ingest-token-value"


def _serve(
    ledger: Ledger, token: str | None = None, max_bytes: int = 1 << 20, ready: bool = True
) -> tuple[ExporterServer, str]:
    sources = SourceHealth()
    sources.enable("ingest", ready=True)
    if not ready:
        sources.enable("transcripts")
    registry = CollectorRegistry(auto_describe=False)
    registry.register(LedgerCollector(ledger))
    registry.register(HealthCollector(sources))
    server = ExporterServer(
        ("127.0.0.1", 0),
        registry=registry,
        ingest=IngestEndpoint(ledger, token=token, max_bytes=max_bytes),
        sources=sources,
    )
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


@pytest.fixture
def served(make_ledger: Callable[..., Ledger]) -> Iterator[Callable[..., tuple[Ledger, str]]]:
    servers: list[ExporterServer] = []

    def start(**kwargs: object) -> tuple[Ledger, str]:
        ledger = make_ledger()
        server, url = _serve(ledger, **kwargs)  # type: ignore[arg-type]
        servers.append(server)
        return ledger, url

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_ndjson_with_bad_lines_keeps_good_ones(
    served: Callable[..., tuple[Ledger, str]], tmp_path: Path
) -> None:
    ledger, url = served()
    lines, truth = generate(seed=41, sessions=12)
    body = b"\r\n".join(lines) + b"\r\n"
    answer = httpx.post(f"{url}/v1/events", content=body)
    assert answer.status_code == 202
    doc = answer.json()
    assert doc["accepted"] == truth.usage_lines
    assert doc["duplicates"] == 0
    assert doc["ignored"] == truth.ignored_lines
    garbage = {raw for raw, _reason in GARBAGE}
    bad_lines = [i + 1 for i, line in enumerate(lines) if line in garbage]
    assert [r["line"] for r in doc["rejected"]] == bad_lines
    # 202 means committed: a separate connection sees the totals right away.
    db = sqlite3.connect(ledger.path)
    stored = db.execute(
        "SELECT SUM(CAST(value AS INTEGER)) FROM counters WHERE family = 'tokens'"
    ).fetchone()[0]
    assert stored == sum(truth.tokens.values())
    again = httpx.post(f"{url}/v1/events", content=body).json()
    assert (again["accepted"], again["duplicates"]) == (0, truth.usage_lines)


def test_single_object_and_array(served: Callable[..., tuple[Ledger, str]]) -> None:
    _ledger, url = served()
    step = {
        "type": "assistant",
        "session_id": "s",
        "message": {
            "id": "msg_a",
            "model": "claude-haiku-4-5",
            "usage": {"input_tokens": 1, "output_tokens": 2},
        },
    }
    one = httpx.post(f"{url}/v1/events", json=step)
    assert one.status_code == 202 and one.json()["accepted"] == 1
    arr = httpx.post(f"{url}/v1/events", json=[step, {"type": "user"}, 7])
    assert arr.status_code == 202
    assert arr.json() == {
        "accepted": 0,
        "duplicates": 1,
        "ignored": 1,
        "rejected": [{"line": 3, "reason": "not_an_object"}],
    }


def test_nothing_usable_is_400(served: Callable[..., tuple[Ledger, str]]) -> None:
    _ledger, url = served()
    empty = httpx.post(f"{url}/v1/events", content=b"  \n")
    assert empty.status_code == 400 and "empty" in empty.json()["error"]
    garbage = httpx.post(f"{url}/v1/events", content=b"nope\n[1]\n")
    assert garbage.status_code == 400
    assert garbage.json()["rejected"] == [
        {"line": 1, "reason": "invalid_json"},
        {"line": 2, "reason": "not_an_object"},
    ]


def test_bearer_token_required_when_set(served: Callable[..., tuple[Ledger, str]]) -> None:
    _ledger, url = served(token=TOKEN)
    body = b'{"type":"user"}'
    assert httpx.post(f"{url}/v1/events", content=body).status_code == 401
    wrong = httpx.post(f"{url}/v1/events", content=body, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    assert TOKEN not in wrong.text
    ok = httpx.post(f"{url}/v1/events", content=body, headers={"Authorization": f"Bearer {TOKEN}"})
    assert ok.status_code == 202
    for page in ("/", "/metrics", "/readyz", "/healthz"):
        assert TOKEN not in httpx.get(url + page).text


def test_oversized_body_refused_before_reading(served: Callable[..., tuple[Ledger, str]]) -> None:
    _ledger, url = served(max_bytes=1000)
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        # Announce 10 MB but send none of it: the answer must come from the header alone.
        sock.sendall(b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n")
        chunks = []
        while data := sock.recv(4096):
            chunks.append(data)
        reply = b"".join(chunks).decode()
    assert reply.startswith("HTTP/1.1 413")
    assert "exceeds the limit of 1000 bytes" in reply


def test_length_required(served: Callable[..., tuple[Ledger, str]]) -> None:
    _ledger, url = served()

    def chunks() -> Iterator[bytes]:
        yield b'{"type":"user"}'

    reply = httpx.post(f"{url}/v1/events", content=chunks())
    assert reply.status_code == 411


def test_pages(served: Callable[..., tuple[Ledger, str]]) -> None:
    _ledger, url = served(ready=False)
    assert httpx.get(f"{url}/healthz").status_code == 200
    ready = httpx.get(f"{url}/readyz")
    assert ready.status_code == 503 and ready.json() == {
        "ready": False,
        "waiting_for": ["transcripts"],
        "down": {},
    }
    landing = httpx.get(f"{url}/")
    assert landing.status_code == 200 and 'href="/metrics"' in landing.text
    assert "ingest" in landing.text
    assert httpx.get(f"{url}/nope").status_code == 404
    metrics = httpx.get(f"{url}/metrics")
    assert "otel_claude_build_info" in metrics.text
    assert "_created" not in metrics.text
    om = httpx.get(f"{url}/metrics", headers={"Accept": "application/openmetrics-text"})
    assert om.headers["content-type"].startswith("application/openmetrics-text")
    assert json.loads(httpx.get(f"{url}/readyz").text)["ready"] is False
