"""The deploy files under deploy/, checked statically (no Docker, no cluster, no network).

Docker Compose: structure against the Compose Specification's vocabulary, pinned images,
declared volumes, bind-mount sources that exist in the repository, health-gated start order.
Kubernetes: every manifest parsed; with ``kubernetes-validate`` installed also validated
strictly against the Kubernetes OpenAPI schemas; cross-references (Secret keys, ConfigMap,
PVC, ports, selectors) and the security context checked exactly. Dockerfile: its
instructions parsed and asserted, its HEALTHCHECK command run against a loopback server.
systemd: ``systemd-analyze verify`` and the offline security review where available, the
directives always. Collector: every component used by a pipeline is defined. Settings that
the files hand to the exporter go through ``otel_claude.config.load_settings``.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
import shutil
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from otel_claude.config import load_settings
from otel_claude.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes"
NAMESPACE = "otel-claude"
PORT = 9477
STATE_DIR = "/var/lib/otel-claude"
UID = 10001


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


# --- Docker Compose --------------------------------------------------------------------

COMPOSE_FILE = DEPLOY / "docker-compose.yml"

# Attribute names the Compose Specification defines (top level, service, healthcheck,
# depends_on conditions); anything else is a typo that `docker compose` would reject.
COMPOSE_TOP_LEVEL = set(
    "version name include services networks volumes secrets configs models".split()
)
COMPOSE_SERVICE_KEYS = set(
    """
annotations attach build blkio_config cap_add cap_drop cgroup cgroup_parent command
configs container_name cpu_count cpu_percent cpu_shares cpu_quota cpu_period
cpu_rt_period cpu_rt_runtime cpus cpuset credential_spec depends_on deploy develop
device_cgroup_rules devices dns dns_opt dns_search domainname entrypoint env_file
environment expose extends external_links extra_hosts gpus group_add healthcheck
hostname image init ipc isolation labels label_file links logging mac_address mem_limit
mem_reservation mem_swappiness memswap_limit models network_mode networks
oom_kill_disable oom_score_adj pid pids_limit platform ports post_start pre_stop
privileged profiles provider pull_policy read_only restart runtime scale secrets
security_opt shm_size stdin_open stop_grace_period stop_signal storage_opt sysctls tmpfs
tty ulimits use_api_socket user userns_mode uts volumes volumes_from working_dir
""".split()
)
COMPOSE_HEALTHCHECK_KEYS = set(
    "disable interval retries test timeout start_period start_interval".split()
)
COMPOSE_CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}
DURATION = re.compile(r"^(\d+(\.\d+)?(us|ms|s|m|h))+$")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    doc = load_yaml(COMPOSE_FILE)
    assert isinstance(doc, dict)
    return doc


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def _mounts(service: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """(source, target, read_only) of every short-syntax volume entry."""
    out = []
    for entry in service.get("volumes", []):
        assert isinstance(entry, str), f"long volume syntax not expected: {entry!r}"
        parts = entry.split(":")
        assert len(parts) in (2, 3), entry
        out.append((parts[0], parts[1], len(parts) == 3 and "ro" in parts[2].split(",")))
    return out


def test_compose_uses_only_compose_spec_attributes(compose: dict[str, Any]) -> None:
    assert set(compose) <= COMPOSE_TOP_LEVEL
    for name, service in compose["services"].items():
        assert re.fullmatch(r"[a-zA-Z0-9._-]+", name)
        assert set(service) <= COMPOSE_SERVICE_KEYS, (name, set(service) - COMPOSE_SERVICE_KEYS)
        check = service.get("healthcheck")
        if check is not None:
            assert set(check) <= COMPOSE_HEALTHCHECK_KEYS, name
            assert check["test"][0] in ("CMD", "CMD-SHELL"), name
            for key in ("interval", "timeout", "start_period"):
                assert DURATION.match(check[key]), (name, key, check[key])
            assert isinstance(check["retries"], int)
        for dependency, spec in (service.get("depends_on") or {}).items():
            assert dependency in compose["services"], (name, dependency)
            assert spec["condition"] in COMPOSE_CONDITIONS
            if spec["condition"] == "service_healthy":
                assert "healthcheck" in compose["services"][dependency], dependency
        for port in service.get("ports", []):
            # Quoted: YAML 1.1 reads some unquoted pairs (22:22) as base-60 integers.
            assert isinstance(port, str)
            assert re.fullmatch(r"127\.0\.0\.1:\d+:\d+", port), (name, port)


def test_compose_services_and_pinned_images(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {
        "otel-claude",
        "prometheus",
        "alertmanager",
        "grafana",
        "otel-collector",
    }
    expected_repos = {
        "prometheus": "prom/prometheus",
        "alertmanager": "prom/alertmanager",
        "grafana": "grafana/grafana",
        "otel-collector": "otel/opentelemetry-collector-contrib",
    }
    for name, repo in expected_repos.items():
        image_repo, _, tag = services[name]["image"].partition(":")
        assert image_repo == repo
        assert re.fullmatch(r"v?\d+\.\d+\.\d+", tag), f"{name}: pin an exact version, not {tag!r}"
    # The exporter is built from this repository and tagged with the project version.
    from otel_claude import __version__

    exporter = services["otel-claude"]
    assert exporter["image"] == f"otel-claude:{__version__}"
    context = (DEPLOY / exporter["build"]["context"]).resolve()
    assert context == ROOT
    assert (context / exporter["build"]["dockerfile"]).resolve() == DEPLOY / "Dockerfile"
    # Everything but the optional collector starts by default and is health-checked.
    assert services["otel-collector"]["profiles"] == ["collector"]
    for name in ("otel-claude", "prometheus", "alertmanager", "grafana"):
        assert "profiles" not in services[name]
        assert "healthcheck" in services[name], name
        assert services[name]["restart"] == "unless-stopped"


def test_compose_volumes_are_declared_and_bind_sources_exist(compose: dict[str, Any]) -> None:
    declared = set(compose["volumes"])
    used: set[str] = set()
    for name, service in compose["services"].items():
        for source, target, _ in _mounts(service):
            assert target.startswith("/"), (name, target)
            if source.startswith((".", "/", "~", "$")):
                path = (DEPLOY / source).resolve()
                assert path.is_relative_to(ROOT), (name, source)
                assert path.exists(), f"{name}: bind-mount source {source} is missing"
            else:
                assert source in declared, f"{name}: volume {source} is not declared"
                used.add(source)
    assert used == declared, f"declared but unused volumes: {declared - used}"


def test_compose_mounts_the_monitoring_configs(compose: dict[str, Any]) -> None:
    services = compose["services"]
    prometheus = services["prometheus"]
    assert _mounts(prometheus) == [
        ("./prometheus/prometheus.yml", "/etc/prometheus/prometheus.yml", True),
        ("./prometheus/rules", "/etc/prometheus/rules", True),
        ("prometheus-data", "/prometheus", False),
    ]
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    assert "--web.enable-lifecycle" in prometheus["command"]
    assert "--web.enable-remote-write-receiver" in prometheus["command"]
    assert ("./alertmanager/alertmanager.yml", "/etc/alertmanager/alertmanager.yml", True) in (
        _mounts(services["alertmanager"])
    )
    assert "--config.file=/etc/alertmanager/alertmanager.yml" in services["alertmanager"]["command"]
    grafana = _mounts(services["grafana"])
    assert ("../grafana/provisioning", "/etc/grafana/provisioning", True) in grafana
    assert ("../grafana/dashboards", "/var/lib/grafana/dashboards", True) in grafana
    # Start order: exporter and Alertmanager healthy before Prometheus, Prometheus before
    # Grafana.
    assert services["prometheus"]["depends_on"] == {
        "otel-claude": {"condition": "service_healthy"},
        "alertmanager": {"condition": "service_healthy"},
    }
    assert services["grafana"]["depends_on"] == {"prometheus": {"condition": "service_healthy"}}


def test_compose_stack_configs_use_compose_service_names(compose: dict[str, Any]) -> None:
    """The Prometheus and Grafana files that compose mounts address the other containers by
    their compose service names, and Prometheus' rule files lie in the mounted rules/."""
    services = compose["services"]
    ports = {"otel-claude": PORT, "prometheus": 9090, "alertmanager": 9093}
    prometheus = load_yaml(DEPLOY / "prometheus" / "prometheus.yml")
    for pattern in prometheus["rule_files"]:
        inside = Path("/etc/prometheus", pattern)  # relative to the config file
        assert inside.is_relative_to("/etc/prometheus/rules"), pattern
        assert list((DEPLOY / "prometheus").glob(pattern)), pattern
    targets = [
        (job["job_name"], target)
        for job in prometheus["scrape_configs"]
        for static in job.get("static_configs", [])
        for target in static["targets"]
    ]
    targets += [
        ("alertmanager", target)
        for am in prometheus["alerting"]["alertmanagers"]
        for static in am["static_configs"]
        for target in static["targets"]
    ]
    assert ("otel-claude", f"otel-claude:{PORT}") in targets
    for job, target in targets:
        host, _, port = target.rpartition(":")
        assert host in services and int(port) == ports[host], (job, target)
    for path in sorted((ROOT / "grafana" / "provisioning" / "datasources").glob("*.y*ml")):
        for source in load_yaml(path).get("datasources", []):
            if source["type"] == "prometheus":
                assert source["url"] == "http://prometheus:9090", path


def test_compose_exporter_service(compose: dict[str, Any]) -> None:
    exporter = compose["services"]["otel-claude"]
    assert exporter["env_file"] == [".env"]
    assert ("otel-claude-state", STATE_DIR, False) in _mounts(exporter)
    assert exporter["ports"] == [f"127.0.0.1:{PORT}:{PORT}"]
    assert exporter["read_only"] is True
    assert exporter["cap_drop"] == ["ALL"]
    assert "no-new-privileges:true" in exporter["security_opt"]
    assert "/healthz" in " ".join(exporter["healthcheck"]["test"])
    # The .env template names both secrets; the real .env is never committed.
    example = (DEPLOY / ".env.example").read_text(encoding="utf-8")
    keys = {line.split("=", 1)[0] for line in example.splitlines() if re.match(r"^[A-Z_]+=", line)}
    assert {"ANTHROPIC_ADMIN_API_KEY", "OTEL_CLAUDE_INGEST_TOKEN"} <= keys
    assert ".env" in (DEPLOY / ".gitignore").read_text(encoding="utf-8").split()
    # What the container gets is a valid configuration once the token is set, and refused
    # without it (listening beyond loopback).
    env = _env(exporter)
    assert env["OTEL_CLAUDE_LISTEN"] == f"0.0.0.0:{PORT}"
    settings = load_settings(env={**env, "OTEL_CLAUDE_INGEST_TOKEN": "t"}, flags={})
    assert (settings.listen_host, settings.listen_port) == ("0.0.0.0", PORT)
    assert str(settings.state_dir) == STATE_DIR
    assert settings.transcripts_enabled is False
    with pytest.raises(ConfigError, match="OTEL_CLAUDE_LISTEN"):
        load_settings(env={**env, "OTEL_CLAUDE_INGEST_TOKEN": ""}, flags={})


# --- Dockerfile ------------------------------------------------------------------------


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, args = line.partition(" ")
        out.append((keyword.upper(), args.strip()))
    assert not pending, "dangling line continuation"
    return out


def stages(instructions: list[tuple[str, str]]) -> dict[str, list[tuple[str, str]]]:
    result: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    for keyword, args in instructions:
        if keyword == "FROM":
            words = args.split()
            assert len(words) == 3 and words[1].upper() == "AS", args
            current = result.setdefault(words[2], [])
            current.append((keyword, words[0]))
        elif current is not None:
            current.append((keyword, args))
    return result


def _env_pairs(args: str) -> dict[str, str]:
    return dict(word.split("=", 1) for word in shlex.split(args))


@pytest.fixture(scope="module")
def dockerfile() -> dict[str, Any]:
    instructions = dockerfile_instructions(DEPLOY / "Dockerfile")
    global_args = {}
    for keyword, args in instructions:
        if keyword == "FROM":
            break
        if keyword == "ARG":
            name, _, default = args.partition("=")
            global_args[name] = default
    return {"args": global_args, "stages": stages(instructions)}


def _one(stage: list[tuple[str, str]], keyword: str) -> str:
    found = [args for k, args in stage if k == keyword]
    assert len(found) == 1, (keyword, found)
    return found[0]


def test_dockerfile_is_multi_stage_on_python_slim(dockerfile: dict[str, Any]) -> None:
    assert dockerfile["args"]["PYTHON_IMAGE"] == "python:3.11-slim"
    assert list(dockerfile["stages"]) == ["builder", "runtime"]
    for stage in dockerfile["stages"].values():
        assert stage[0] == ("FROM", "${PYTHON_IMAGE}")
    builder = dockerfile["stages"]["builder"]
    copied = [args.split() for k, args in builder if k == "COPY"]
    assert copied == [
        ["pyproject.toml", "setup.py", "README.md", "./"],
        ["otel_claude/", "./otel_claude/"],
    ]
    # The optional C scanner is compiled into the wheel, and the image proves it loads.
    assert any(k == "RUN" and "apt-get install" in a and " gcc " in a for k, a in builder)
    for words in copied:
        for source in words[:-1]:
            assert (ROOT / source).exists(), source
    assert any(k == "RUN" and "pip wheel --wheel-dir /wheels ." in a for k, a in builder)
    # The runtime stage installs the built wheel offline and copies no sources.
    runtime = dockerfile["stages"]["runtime"]
    assert not [a for k, a in runtime if k in ("COPY", "ADD")]
    install = [a for k, a in runtime if k == "RUN" and "pip install" in a]
    assert len(install) == 1
    assert "--mount=type=bind,from=builder,source=/wheels,target=/wheels" in install[0]
    assert "--no-index" in install[0] and "/wheels/otel_claude-*.whl" in install[0]
    assert 'python -c "import otel_claude.sources._linescan"' in install[0]


def test_dockerfile_runtime_user_volume_and_entrypoint(dockerfile: dict[str, Any]) -> None:
    runtime = dockerfile["stages"]["runtime"]
    args = {}
    for k, a in runtime:
        if k == "ARG":
            name, _, default = a.partition("=")
            args[name] = default
    assert args == {"OTEL_CLAUDE_UID": str(UID), "OTEL_CLAUDE_GID": str(UID)}
    user = _one(runtime, "USER")
    for name, value in args.items():
        user = user.replace("${" + name + "}", value)
    assert user == f"{UID}:{UID}", "numeric, non-root"
    useradd = next(a for k, a in runtime if k == "RUN" and "useradd" in a)
    assert '--uid "${OTEL_CLAUDE_UID}"' in useradd and " otel-claude " in useradd
    assert f"-o otel-claude -g otel-claude {STATE_DIR}" in useradd
    # USER comes after the user is created and the package is installed.
    keywords = [k for k, _ in runtime]
    assert keywords.index("USER") > max(i for i, k in enumerate(keywords) if k == "RUN")
    assert _one(runtime, "VOLUME") == f'["{STATE_DIR}"]'
    assert _one(runtime, "EXPOSE") == str(PORT)
    assert _one(runtime, "ENTRYPOINT") == '["otel-claude"]'
    assert _one(runtime, "CMD") == '["serve"]'
    assert _one(runtime, "STOPSIGNAL") == "SIGTERM"
    # The entrypoint is the project's console script.
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert project["project"]["scripts"]["otel-claude"] == "otel_claude.cli:run"


def _dockerfile_env(dockerfile: dict[str, Any]) -> dict[str, str]:
    env: dict[str, str] = {}
    for k, a in dockerfile["stages"]["runtime"]:
        if k == "ENV":
            env.update(_env_pairs(a))
    return env


def test_dockerfile_environment_is_a_valid_configuration(dockerfile: dict[str, Any]) -> None:
    env = _dockerfile_env(dockerfile)
    assert env["OTEL_CLAUDE_LISTEN"] == f"0.0.0.0:{PORT}"
    assert env["OTEL_CLAUDE_STATE_DIR"] == STATE_DIR
    assert env["OTEL_CLAUDE_TRANSCRIPTS"] == "off"
    with pytest.raises(ConfigError, match="OTEL_CLAUDE_INGEST_TOKEN"):
        load_settings(env=env, flags={})
    settings = load_settings(env={**env, "OTEL_CLAUDE_INGEST_TOKEN_FILE": str(__file__)}, flags={})
    assert settings.listen_port == PORT and str(settings.state_dir) == STATE_DIR


class _Health(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/healthz" else 404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


def test_dockerfile_healthcheck_command_works(
    dockerfile: dict[str, Any], health_server: ThreadingHTTPServer
) -> None:
    """Run the image's HEALTHCHECK (exec form, python -c) against a loopback server."""
    check = _one(dockerfile["stages"]["runtime"], "HEALTHCHECK")
    options, _, command = check.partition(" CMD ")
    assert {"--interval=30s", "--timeout=5s", "--retries=3"} <= set(options.split())
    argv = json.loads(command)  # exec form: the slim image needs no shell for it
    assert argv[:2] == ["python", "-c"] and "/healthz" in argv[2]
    port = health_server.server_address[1]

    def run(listen: str) -> int:
        env = {"OTEL_CLAUDE_LISTEN": listen, "PATH": "/usr/bin:/bin"}
        return subprocess.run(
            [sys.executable, "-c", argv[2]], env=env, capture_output=True, timeout=30
        ).returncode

    assert run(f"0.0.0.0:{port}") == 0
    _Health.status = 503
    try:
        assert run(f"0.0.0.0:{port}") != 0
    finally:
        _Health.status = 200
    health_server.shutdown()
    health_server.server_close()
    assert run(f"0.0.0.0:{port}") != 0  # nothing listening


# --- Kubernetes ------------------------------------------------------------------------

K8S_FILES = {
    "namespace.yaml": "Namespace",
    "secret.yaml": "Secret",
    "configmap.yaml": "ConfigMap",
    "pvc.yaml": "PersistentVolumeClaim",
    "deployment.yaml": "Deployment",
    "service.yaml": "Service",
    "servicemonitor.yaml": "ServiceMonitor",
}
API_VERSIONS = {
    "Namespace": "v1",
    "Secret": "v1",
    "ConfigMap": "v1",
    "PersistentVolumeClaim": "v1",
    "Deployment": "apps/v1",
    "Service": "v1",
    "ServiceMonitor": "monitoring.coreos.com/v1",
    "PrometheusRule": "monitoring.coreos.com/v1",
}


@pytest.fixture(scope="module")
def k8s() -> dict[str, dict[str, Any]]:
    """Every manifest by kind (one document per file)."""
    out: dict[str, dict[str, Any]] = {}
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        docs = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]
        assert len(docs) == 1, path
        doc = docs[0]
        assert doc["kind"] not in out, f"two {doc['kind']} manifests"
        out[doc["kind"]] = doc
    return out


def test_k8s_manifests_kinds_and_metadata(k8s: dict[str, dict[str, Any]]) -> None:
    for file, kind in K8S_FILES.items():
        assert (K8S / file).is_file(), file
        assert load_yaml(K8S / file)["kind"] == kind
    assert set(k8s) - {"PrometheusRule"} == set(K8S_FILES.values())
    for kind, doc in k8s.items():
        assert doc["apiVersion"] == API_VERSIONS[kind], kind
        meta = doc["metadata"]
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", meta["name"]), kind
        assert meta["labels"]["app.kubernetes.io/name"] == "otel-claude", kind
        if kind == "Namespace":
            assert meta["name"] == NAMESPACE and "namespace" not in meta
        else:
            assert meta["namespace"] == NAMESPACE, kind


def test_k8s_core_manifests_match_the_kubernetes_schemas(k8s: dict[str, dict[str, Any]]) -> None:
    """Strict OpenAPI validation (unknown fields rejected) for the oldest and newest
    Kubernetes versions kubernetes-validate ships; the CRDs are checked structurally."""
    utils = pytest.importorskip("kubernetes_validate.utils")
    versions = utils.all_versions()
    oldest, newest = versions[0], versions[-1]
    for kind, doc in k8s.items():
        if API_VERSIONS[kind].startswith("monitoring.coreos.com/"):
            continue
        for version in (oldest, newest):
            utils.validate(doc, version, strict=True)


def _container(k8s: dict[str, dict[str, Any]]) -> dict[str, Any]:
    containers = k8s["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    container: dict[str, Any] = containers[0]
    return container


def test_k8s_deployment_single_writer_and_probes(k8s: dict[str, dict[str, Any]]) -> None:
    spec = k8s["Deployment"]["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}, "never two pods on one ledger"
    pod_labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= pod_labels.items()
    container = _container(k8s)
    assert container["image"] == "otel-claude:0.1.0"
    assert container["args"] == ["serve"]
    assert container["ports"] == [{"name": "metrics", "containerPort": PORT, "protocol": "TCP"}]
    probes = {
        name: container[name]["httpGet"]
        for name in ("startupProbe", "livenessProbe", "readinessProbe")
    }
    assert probes == {
        "startupProbe": {"path": "/healthz", "port": "metrics"},
        "livenessProbe": {"path": "/healthz", "port": "metrics"},
        "readinessProbe": {"path": "/readyz", "port": "metrics"},
    }
    resources = container["resources"]
    assert set(resources["requests"]) == {"cpu", "memory"} and "memory" in resources["limits"]
    for amounts in resources.values():  # Kubernetes quantities, which the schema leaves open
        assert re.fullmatch(r"\d+m|\d+(\.\d+)?", str(amounts["cpu"])), amounts
        assert re.fullmatch(r"\d+(Ki|Mi|Gi)", amounts["memory"]), amounts


def test_k8s_pod_security_is_restricted(k8s: dict[str, dict[str, Any]]) -> None:
    labels = k8s["Namespace"]["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    pod = k8s["Deployment"]["spec"]["template"]["spec"]
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": UID,
        "runAsGroup": UID,
        "fsGroup": UID,
        "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert pod["automountServiceAccountToken"] is False
    # Service links would inject OTEL_CLAUDE_PORT=tcp://… and friends (from the Service
    # named otel-claude) into the exporter's own variable namespace.
    assert pod["enableServiceLinks"] is False
    assert _container(k8s)["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }


def test_k8s_references_resolve(k8s: dict[str, dict[str, Any]]) -> None:
    pod = k8s["Deployment"]["spec"]["template"]["spec"]
    container = _container(k8s)
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert set(mounts.values()) == set(volumes)
    # State on the PVC, config from the ConfigMap, a writable /tmp on a read-only root.
    pvc = volumes[mounts[STATE_DIR]]["persistentVolumeClaim"]["claimName"]
    assert pvc == k8s["PersistentVolumeClaim"]["metadata"]["name"]
    assert k8s["PersistentVolumeClaim"]["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert k8s["PersistentVolumeClaim"]["spec"]["resources"]["requests"]["storage"] == "1Gi"
    config_volume = volumes[mounts["/etc/otel-claude"]]["configMap"]["name"]
    assert config_volume == k8s["ConfigMap"]["metadata"]["name"]
    assert "emptyDir" in volumes[mounts["/tmp"]]
    # Every Secret key the container reads exists; only the Admin key may be absent.
    secret = k8s["Secret"]
    env = {e["name"]: e for e in container["env"]}
    refs = {name: e["valueFrom"]["secretKeyRef"] for name, e in env.items() if "valueFrom" in e}
    assert set(refs) == {"OTEL_CLAUDE_INGEST_TOKEN", "ANTHROPIC_ADMIN_API_KEY"}
    for name, ref in refs.items():
        assert ref["name"] == secret["metadata"]["name"], name
        assert ref["key"] in secret["stringData"], name
    assert refs["ANTHROPIC_ADMIN_API_KEY"].get("optional") is True
    assert refs["OTEL_CLAUDE_INGEST_TOKEN"].get("optional", False) is False
    config_file = env["OTEL_CLAUDE_CONFIG"]["value"]
    directory, _, key = config_file.rpartition("/")
    assert directory == "/etc/otel-claude" and key in k8s["ConfigMap"]["data"]


def test_k8s_service_and_servicemonitor_match_the_pod(k8s: dict[str, dict[str, Any]]) -> None:
    pod_labels = k8s["Deployment"]["spec"]["template"]["metadata"]["labels"]
    service = k8s["Service"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": PORT, "targetPort": "metrics", "protocol": "TCP"}
    ]
    container_ports = {p["name"]: p["containerPort"] for p in _container(k8s)["ports"]}
    assert container_ports[service["spec"]["ports"][0]["targetPort"]] == PORT
    monitor = k8s["ServiceMonitor"]["spec"]
    assert monitor["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    assert [(e["port"], e["path"]) for e in monitor["endpoints"]] == [("metrics", "/metrics")]
    # Scraped as often as the plain Prometheus configuration scrapes the exporter.
    prometheus = load_yaml(DEPLOY / "prometheus" / "prometheus.yml")
    job = next(j for j in prometheus["scrape_configs"] if j["job_name"] == "otel-claude")
    interval = job.get("scrape_interval", prometheus["global"]["scrape_interval"])
    assert monitor["endpoints"][0]["interval"] == interval


def test_k8s_configmap_is_a_valid_exporter_config(
    k8s: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    data = k8s["ConfigMap"]["data"]
    assert list(data) == ["otel-claude.toml"]
    config = tmp_path / "otel-claude.toml"
    config.write_text(data["otel-claude.toml"], encoding="utf-8")
    tomllib.loads(data["otel-claude.toml"])
    settings = load_settings(
        env={"OTEL_CLAUDE_CONFIG": str(config), "OTEL_CLAUDE_INGEST_TOKEN": "t"}, flags={}
    )
    assert (settings.listen_host, settings.listen_port) == ("0.0.0.0", PORT)
    assert str(settings.state_dir) == STATE_DIR
    assert settings.transcripts_enabled is False
    assert settings.ledger_synchronous == "full"
    with pytest.raises(ConfigError):  # beyond loopback without the Secret's token
        load_settings(env={"OTEL_CLAUDE_CONFIG": str(config)}, flags={})


def test_k8s_kustomization_lists_the_core_manifests() -> None:
    kustomization = load_yaml(K8S / "kustomization.yaml")
    assert kustomization["kind"] == "Kustomization"
    resources = kustomization["resources"]
    assert resources == [
        "namespace.yaml",
        "secret.yaml",
        "configmap.yaml",
        "pvc.yaml",
        "deployment.yaml",
        "service.yaml",
    ], "namespace first; the Operator CRs (ServiceMonitor, PrometheusRule) stay out"
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        return
    proc = subprocess.run(
        [kubectl, "kustomize", str(K8S)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    kinds = [d["kind"] for d in yaml.safe_load_all(proc.stdout) if d]
    assert sorted(kinds) == sorted(K8S_FILES[r] for r in resources)


# --- PrometheusRule generator ----------------------------------------------------------


@pytest.fixture(scope="module")
def make_rule() -> ModuleType:
    path = K8S / "make_prometheusrule.py"
    spec = importlib.util.spec_from_file_location("make_prometheusrule", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write_rules(directory: Path) -> None:
    directory.mkdir()
    (directory / "b-alerts.yml").write_text(
        "groups:\n"
        "  - name: otel-claude-alerts\n"
        "    rules:\n"
        "      - alert: OtelClaudeSourceDown\n"
        "        expr: |\n"
        "          otel_claude_source_up == 0\n"
        "          and on () vector(1)\n"
        "        for: 10m\n"
        "        labels: {severity: warning}\n"
        "        annotations:\n"
        "          summary: 'Source {{ $labels.source }} is down'\n",
        encoding="utf-8",
    )
    (directory / "a-recording.yml").write_text(
        "groups:\n"
        "  - name: otel-claude-recording\n"
        "    interval: 1m\n"
        "    rules:\n"
        "      - record: claude:agent_tokens:rate5m\n"
        "        expr: sum by (model) (rate(claude_agent_tokens_total[5m]))\n",
        encoding="utf-8",
    )
    (directory / "alerts.test.yml").write_text(  # promtool unit tests: skipped
        "rule_files: [b-alerts.yml]\ntests: []\n", encoding="utf-8"
    )
    (directory / "README.md").write_text("not a rule file\n", encoding="utf-8")


def test_prometheusrule_generator_wraps_groups_in_order(
    make_rule: ModuleType, tmp_path: Path
) -> None:
    rules = tmp_path / "rules"
    _write_rules(rules)
    text = make_rule.render(rules)
    assert text.startswith("# Generated by deploy/kubernetes/make_prometheusrule.py")
    doc = yaml.safe_load(text)
    assert doc["apiVersion"] == "monitoring.coreos.com/v1"
    assert doc["kind"] == "PrometheusRule"
    assert doc["metadata"] == {
        "name": "otel-claude",
        "namespace": NAMESPACE,
        "labels": {"app.kubernetes.io/name": "otel-claude"},
    }
    expected = load_yaml(rules / "a-recording.yml")["groups"]
    expected += load_yaml(rules / "b-alerts.yml")["groups"]
    assert doc["spec"]["groups"] == expected  # unchanged, file order
    assert "expr: |\n" in text  # multi-line PromQL stays a readable block
    # --check reports a stale manifest; writing makes it current.
    out = tmp_path / "prometheusrule.yaml"
    argv = ["--rules-dir", str(rules), "-o", str(out)]
    assert make_rule.main([*argv, "--check"]) == 1
    assert make_rule.main(argv) == 0
    assert make_rule.main([*argv, "--check"]) == 0
    assert out.read_text(encoding="utf-8") == text


def test_prometheusrule_generator_rejects_bad_input(make_rule: ModuleType, tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    _write_rules(rules)
    (rules / "c-dup.yml").write_text(
        "groups:\n  - name: otel-claude-alerts\n    rules: []\n", encoding="utf-8"
    )
    with pytest.raises(make_rule.RuleError, match="otel-claude-alerts"):
        make_rule.render(rules)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(make_rule.RuleError, match="no rule groups"):
        make_rule.render(empty)
    assert make_rule.main(["--rules-dir", str(empty), "-o", "-"]) == 2


def test_prometheusrule_manifest_is_current(make_rule: ModuleType) -> None:
    """deploy/kubernetes/prometheusrule.yaml carries exactly the groups of
    deploy/prometheus/rules/ (regenerate with make_prometheusrule.py after editing them)."""
    rules_dir = DEPLOY / "prometheus" / "rules"
    if not rules_dir.is_dir() or not make_rule.load_groups(make_rule.rule_files(rules_dir)):
        pytest.skip("deploy/prometheus/rules/ has no rule groups yet")
    manifest = K8S / "prometheusrule.yaml"
    assert manifest.is_file(), "run python3 deploy/kubernetes/make_prometheusrule.py"
    doc = load_yaml(manifest)
    source = make_rule.load_groups(make_rule.rule_files(rules_dir))
    assert [g["name"] for g in doc["spec"]["groups"]] == [g["name"] for g in source]
    assert manifest.read_text(encoding="utf-8") == make_rule.render(rules_dir), (
        "stale: run python3 deploy/kubernetes/make_prometheusrule.py"
    )


def test_prometheusrule_groups_pass_promtool(tmp_path: Path) -> None:
    """What the Operator would load is a rule file promtool accepts."""
    manifest = K8S / "prometheusrule.yaml"
    promtool = shutil.which("promtool")
    if promtool is None or not manifest.is_file():
        pytest.skip("needs promtool and a generated prometheusrule.yaml")
    rules = tmp_path / "rules.yml"
    rules.write_text(yaml.safe_dump({"groups": load_yaml(manifest)["spec"]["groups"]}))
    proc = subprocess.run(
        [promtool, "check", "rules", str(rules)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --- systemd ---------------------------------------------------------------------------

UNIT = DEPLOY / "systemd" / "otel-claude.service"


def unit_directives(path: Path) -> dict[str, list[tuple[str, str]]]:
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        assert current is not None, f"directive outside a section: {line}"
        key, sep, value = line.partition("=")
        assert sep, line
        current.append((key.strip(), value.strip()))
    return sections


def test_systemd_unit_directives() -> None:
    sections = unit_directives(UNIT)
    assert set(sections) == {"Unit", "Service", "Install"}
    service = sections["Service"]
    single = {k: v for k, v in service}
    environment = [v for k, v in service if k == "Environment"]
    assert single["ExecStart"] == "/opt/otel-claude/bin/otel-claude serve"
    assert single["DynamicUser"] == "yes"
    assert single["StateDirectory"] == "otel-claude"
    assert f"OTEL_CLAUDE_STATE_DIR={STATE_DIR}" in environment
    assert f"OTEL_CLAUDE_LISTEN=127.0.0.1:{PORT}" in environment
    assert single["EnvironmentFile"] == "-/etc/otel-claude/env"
    assert single["LoadCredential"] == "admin-api-key:/etc/otel-claude/admin-api-key"
    assert "ANTHROPIC_ADMIN_API_KEY_FILE=%d/admin-api-key" in environment
    expected = {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "Restart": "on-failure",
        "KillSignal": "SIGTERM",
        "TimeoutStopSec": "15",
        "CapabilityBoundingSet": "",
        "UMask": "0077",
    }
    assert {k: single.get(k) for k in expected} == expected
    assert ("WantedBy", "multi-user.target") in sections["Install"]
    # StateDirectory= is relative to /var/lib for system services.
    assert STATE_DIR == "/var/lib/" + single["StateDirectory"]
    settings = load_settings(
        env=dict(e.split("=", 1) for e in environment if "%d" not in e), flags={}
    )
    assert settings.listen_host == "127.0.0.1" and str(settings.state_dir) == STATE_DIR


def _systemd_analyze() -> str:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed")
    return tool


def _unit_copy(tmp_path: Path) -> Path:
    """The unit with ExecStart's binary swapped for one that exists here (verify checks)."""
    text = UNIT.read_text(encoding="utf-8")
    assert "ExecStart=/opt/otel-claude/bin/otel-claude " in text
    copy = tmp_path / UNIT.name
    copy.write_text(
        text.replace("ExecStart=/opt/otel-claude/bin/otel-claude ", f"ExecStart={sys.executable} "),
        encoding="utf-8",
    )
    return copy


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    tool = _systemd_analyze()
    copy = _unit_copy(tmp_path)
    proc = subprocess.run(
        [tool, "verify", str(copy)], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    complaints = [line for line in proc.stderr.splitlines() if copy.name in line]
    assert proc.returncode == 0 and not complaints, proc.stderr


def test_systemd_security_exposure_is_low(tmp_path: Path) -> None:
    tool = _systemd_analyze()
    copy = _unit_copy(tmp_path)
    proc = subprocess.run(
        [tool, "security", "--offline=true", "--no-pager", str(copy)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    if "--offline" in proc.stderr and proc.returncode != 0:
        pytest.skip("this systemd-analyze has no offline security review")
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", proc.stdout)
    assert match, proc.stdout + proc.stderr
    assert float(match.group(1)) <= 2.0, proc.stdout


# --- OpenTelemetry Collector -----------------------------------------------------------


def test_otelcol_pipelines_reference_defined_components() -> None:
    path = DEPLOY / "otelcol" / "config.yaml"
    config = load_yaml(path)
    service = config["service"]
    for extension in service["extensions"]:
        assert extension in config["extensions"], extension
    for name, pipeline in service["pipelines"].items():
        assert name.split("/")[0] in ("metrics", "traces", "logs"), name
        for kind in ("receivers", "processors", "exporters"):
            for component in pipeline[kind]:
                assert component in config[kind], (name, kind, component)
    metrics = service["pipelines"]["metrics"]
    assert metrics["receivers"] == ["otlp"]
    assert metrics["processors"][0] == "memory_limiter"
    assert metrics["processors"][-1] == "batch"
    assert metrics["exporters"] == ["prometheusremotewrite"]
    protocols = config["receivers"]["otlp"]["protocols"]
    assert protocols["grpc"]["endpoint"] == "0.0.0.0:4317"
    assert protocols["http"]["endpoint"] == "0.0.0.0:4318"
    remote_write = config["exporters"]["prometheusremotewrite"]
    assert remote_write["resource_to_telemetry_conversion"] == {"enabled": True}
    assert remote_write["endpoint"].startswith("${env:OTELCOL_REMOTE_WRITE_ENDPOINT:-http")
    # The scrape alternative is there, commented out.
    text = path.read_text(encoding="utf-8")
    assert re.search(r"^  # prometheus:\n  #   endpoint: 0\.0\.0\.0:8889$", text, re.M)
    # The compose profile runs exactly this file and points it at compose's Prometheus.
    collector = load_yaml(COMPOSE_FILE)["services"]["otel-collector"]
    assert ("./otelcol/config.yaml", "/etc/otelcol/config.yaml", True) in _mounts(collector)
    assert _env(collector)["OTELCOL_REMOTE_WRITE_ENDPOINT"] == (
        "http://prometheus:9090/api/v1/write"
    )


# --- README ----------------------------------------------------------------------------


def test_deploy_readme_describes_every_file() -> None:
    readme = (DEPLOY / "README.md").read_text(encoding="utf-8")
    mine = [
        p
        for p in DEPLOY.rglob("*")
        if p.is_file()
        and p.relative_to(DEPLOY).parts[0] not in ("prometheus", "alertmanager")
        and "__pycache__" not in p.parts
        and p.name not in (".gitignore", ".env", "README.md")
    ]
    for path in mine:
        assert path.name in readme, f"deploy/README.md does not mention {path.name}"
    assert "docker build -f deploy/Dockerfile" in readme
    assert "kubectl apply -k deploy/kubernetes" in readme
