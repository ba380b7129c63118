"""TLS and basic auth on the HTTP pages; a real Prometheus scrapes through both."""

from __future__ import annotations

import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import httpx
import pytest
from prometheus_client import CollectorRegistry

from otel_claude.config import load_settings
from otel_claude.exposition.prometheus import LedgerCollector
from otel_claude.health import SourceHealth
from otel_claude.ledger import Ledger
from otel_claude.pricing import load_price_table
from otel_claude.server import ExporterServer, IngestEndpoint
from otel_claude.websecurity import WebSecurity
from tests.conftest import need_binary
from tests.procs import running_prometheus

PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("tls")
    crt, key = folder / "tls.crt", folder / "tls.key"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(crt),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return crt, key


@pytest.fixture
def served(tmp_path: Path, cert: tuple[Path, Path]) -> Iterator[str]:
    config = tmp_path / "c.toml"
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    config.write_text(
        f'[web]\ntls_cert_file = "{cert[0]}"\ntls_key_file = "{cert[1]}"\n'
        f'[web.basic_auth_users]\nprometheus = "{hashed}"\n'
    )
    settings = load_settings(env={"OTEL_CLAUDE_CONFIG": str(config)})
    ledger = Ledger(":memory:", prices=load_price_table())
    health = SourceHealth()
    health.enable("ingest", ready=True)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(LedgerCollector(ledger))
    server = ExporterServer(
        ("127.0.0.1", 0),
        registry=registry,
        ingest=IngestEndpoint(ledger, token=None, max_bytes=1 << 20),
        sources=health,
        security=settings.web_security(),
    )
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    yield f"https://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    ledger.close()


def test_pages_need_auth_over_tls(served: str, cert: tuple[Path, Path]) -> None:
    with httpx.Client(verify=ssl.create_default_context(cafile=str(cert[0]))) as client:
        assert client.get(f"{served}/healthz").status_code == 200  # probes stay open
        for page in ("/metrics", "/", "/readyz"):
            denied = client.get(f"{served}{page}")
            assert denied.status_code == 401
            assert denied.headers["www-authenticate"].startswith("Basic")
            assert client.get(f"{served}{page}", auth=("prometheus", "wrong")).status_code == 401
            assert client.get(f"{served}{page}", auth=("nobody", PASSWORD)).status_code == 401
            ok = client.get(f"{served}{page}", auth=("prometheus", PASSWORD))
            assert ok.status_code == 200, page
    with pytest.raises(httpx.HTTPError):  # plain HTTP on the TLS port gets nothing
        httpx.get(served.replace("https", "http") + "/metrics", timeout=5)


def test_prometheus_scrapes_through_tls_and_basic_auth(
    served: str, tmp_path: Path, cert: tuple[Path, Path]
) -> None:
    prometheus = need_binary("prometheus")
    extra = {
        "scheme": "https",
        "tls_config": {"ca_file": str(cert[0])},
        "basic_auth": {"username": "prometheus", "password": PASSWORD},
    }
    with running_prometheus(
        prometheus, tmp_path, [served.removeprefix("https://")], scrape_extra=extra
    ) as prom:
        assert prom.wait_for('up{job="otel-claude"} == 1')


def test_misconfiguration_is_reported(tmp_path: Path) -> None:
    from otel_claude.errors import ConfigError, OtelClaudeError

    config = tmp_path / "c.toml"
    config.write_text('[web.basic_auth_users]\nprometheus = "plaintext"\n')
    with pytest.raises(ConfigError, match="bcrypt"):
        load_settings(env={"OTEL_CLAUDE_CONFIG": str(config)})
    bogus = tmp_path / "bogus.pem"
    bogus.write_text("not a certificate")
    with pytest.raises(OtelClaudeError, match="cannot load"):
        WebSecurity(bogus, None).ssl_context()
