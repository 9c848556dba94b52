"""The Dockerfiles and docker-compose.yml agree with the workspace, the ports of DESIGN.md, the settings."""

from __future__ import annotations

import importlib.util
import json
import re
import tomllib
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest
import yaml

from .conftest import EMULATOR, ROOT, SERVICES, declared_env

pytestmark = pytest.mark.unit

# Dockerfile -> (workspace members it installs with `--package`, its port, the port's variable)
IMAGES: dict[str, tuple[list[str], int, str]] = {
    "services/ingest/Dockerfile": (["shopbotly-ingest"], 8080, "SHOPBOTLY_PORT"),
    "services/mapper/Dockerfile": (["shopbotly-mapper", "shopbotly-cli"], 9101, "SHOPBOTLY_PORT"),
    "services/crm-writer/Dockerfile": (["shopbotly-crm-writer"], 9102, "SHOPBOTLY_PORT"),
    "services/order-reader/Dockerfile": (["shopbotly-order-reader"], 8081, "SHOPBOTLY_PORT"),
    "tools/crm-emulator/Dockerfile": (["shopbotly-crm-emulator"], 8090, "SHOPBOTLY_EMULATOR_PORT"),
}


def _members() -> dict[str, tuple[Path, dict[str, Any]]]:
    """Workspace member name -> (folder, parsed pyproject.toml)."""
    root = tomllib.loads((ROOT / "pyproject.toml").read_text())
    out = {}
    for pattern in root["tool"]["uv"]["workspace"]["members"]:
        for folder in sorted(ROOT.glob(pattern)):
            if (folder / "pyproject.toml").exists():
                data = tomllib.loads((folder / "pyproject.toml").read_text())
                out[data["project"]["name"]] = (folder.relative_to(ROOT), data)
    return out


def _workspace_closure(names: list[str], members: dict[str, tuple[Path, dict[str, Any]]]) -> set[str]:
    """The members `names` need: themselves and every workspace member they depend on, transitively."""
    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        deps = members[name][1]["project"].get("dependencies", [])
        for dep in deps:
            dep_name = re.split(r"[\s<>=!~\[;]", dep, maxsplit=1)[0]
            if dep_name in members:
                todo.append(dep_name)
    return seen


def _instructions(dockerfile: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            op, _, rest = line.partition(" ")
            out.append((op.upper(), rest.strip()))
    return out


@pytest.mark.parametrize("path", sorted(IMAGES))
def test_dockerfile_installs_its_locked_packages_as_non_root(path: str) -> None:
    packages, port, port_var = IMAGES[path]
    members = _members()
    steps = _instructions(ROOT / path)
    stages = [rest for op, rest in steps if op == "FROM"]
    assert len(stages) >= 3 and stages[-1].endswith("AS runtime"), "multi-stage: uv, build, runtime"
    syncs = [rest for op, rest in steps if op == "RUN" and "uv sync" in rest]
    assert len(syncs) == 2, "one sync for the dependencies, one for the workspace members"
    for sync in syncs:
        assert "--frozen" in sync and "--no-dev" in sync
        assert re.findall(r"--package (\S+)", sync) == packages
    assert "--no-install-workspace" in syncs[0] and "--no-editable" in syncs[1]
    # Every workspace member the packages need is copied (manifest and sources), and nothing else.
    needed = {str(members[n][0]) for n in _workspace_closure(packages, members)}
    copies = [rest.split() for op, rest in steps if op == "COPY" and not rest.startswith("--from")]
    manifests = {Path(src).parent.as_posix() for src, *_ in copies if src.endswith("/pyproject.toml")}
    sources = {Path(src).parent.as_posix() for src, *_ in copies if src.endswith("/src")}
    assert manifests == needed and sources == needed, (manifests, sources, needed)
    users = [rest for op, rest in steps if op == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), "the runtime stage runs as non-root"
    assert ("EXPOSE", str(port)) in steps
    env = " ".join(rest for op, rest in steps if op == "ENV")
    assert f"{port_var}={port}" in env
    (entrypoint,) = [json.loads(rest) for op, rest in steps if op == "ENTRYPOINT"]
    scripts = members[packages[0]][1]["project"]["scripts"]
    assert entrypoint == [next(iter(scripts))], "the entry point is the package's console script"
    assert any(op == "HEALTHCHECK" and "/healthz" in rest for op, rest in steps)


def test_dockerignore_keeps_local_state_out_of_the_build_context() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*", "allow-list: everything is excluded first"
    allowed = {p[1:] for p in patterns if p.startswith("!")}
    copied = set()
    for path in IMAGES:
        for op, rest in _instructions(ROOT / path):
            if op == "COPY" and not rest.startswith("--from"):
                copied.update(rest.split()[:-1])
    for src in copied:
        assert src.split("/")[0] in allowed, f"{src} is copied but excluded by .dockerignore"
    for local in (".venv", ".run", ".cache", ".git", ".tools"):
        assert local not in allowed


def test_compose_file_is_valid_against_the_compose_spec(compose: dict[str, Any]) -> None:
    # The compose-spec JSON Schema vendored in check-jsonschema (what deploy/lint.sh runs), read as a file:
    # find_spec locates the package without importing it.
    spec = importlib.util.find_spec("check_jsonschema")
    assert spec is not None and spec.origin is not None, "check-jsonschema is a dev dependency"
    schema_file = Path(spec.origin).parent / "builtin_schemas" / "vendor" / "compose-spec.json"
    schema = json.loads(schema_file.read_text())
    jsonschema.validate(compose, schema, cls=jsonschema.Draft7Validator)


def test_compose_runs_kafka_4_kraft_and_creates_topics_from_the_registry(compose: dict[str, Any]) -> None:
    services = compose["services"]
    kafka = services["kafka"]
    image = re.search(r"apache/kafka:(\d+)\.(\d+)\.(\d+)", kafka["image"])
    assert image and (int(image[1]), int(image[2])) >= (4, 1), kafka["image"]
    assert kafka["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert kafka["environment"]["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    topics = services["topics"]
    assert topics["entrypoint"] + topics["command"] == ["shopbotly", "topics", "create"]
    assert topics["depends_on"]["kafka"]["condition"] == "service_healthy"
    for name in SERVICES:
        assert services[name]["depends_on"]["topics"]["condition"] == "service_completed_successfully"


def test_compose_services_listen_on_the_design_ports_with_declared_settings(compose: dict[str, Any]) -> None:
    services = compose["services"]
    published = {p.rsplit(":", 1)[-1] for p in services["pod"]["ports"]}
    expected = {name: (port, package) for name, (port, package) in SERVICES.items()}
    expected["crm-emulator"] = EMULATOR
    for name, (port, package) in expected.items():
        env = {k: str(v) for k, v in services[name]["environment"].items()}
        port_var = "SHOPBOTLY_EMULATOR_PORT" if name == "crm-emulator" else "SHOPBOTLY_PORT"
        assert env[port_var] == str(port), name
        assert str(port) in published, f"{name}: port {port} is not published"
        assert services[name]["network_mode"] == "service:pod"
        assert services[name]["read_only"] is True and services[name]["cap_drop"] == ["ALL"]
        assert "/readyz" in " ".join(services[name]["healthcheck"]["test"])
        unknown = [v for v in env if v.startswith("SHOPBOTLY_") and v not in declared_env(package)]
        assert not unknown, f"{name}: no Settings class declares {unknown}"
        if "SHOPBOTLY_DATA_DIR" in env:
            assert any(v.split(":")[1] == env["SHOPBOTLY_DATA_DIR"] for v in services[name]["volumes"]), name


def test_prometheus_scrapes_every_service_and_grafana_is_provisioned(compose: dict[str, Any]) -> None:
    observability = ROOT / "deploy" / "observability"
    scrape = yaml.safe_load((observability / "prometheus.yml").read_text())
    targets = {
        t["labels"]["service"]: target
        for job in scrape["scrape_configs"]
        for t in job["static_configs"]
        for target in t["targets"]
        if "labels" in t
    }
    expected = {name: port for name, (port, _) in SERVICES.items()} | {"crm-emulator": EMULATOR[0]}
    assert targets == {name: f"pod:{port}" for name, port in expected.items()}
    prometheus = compose["services"]["prometheus"]
    assert "./deploy/observability:/etc/prometheus/shopbotly:ro" in prometheus["volumes"]
    assert "--config.file=/etc/prometheus/shopbotly/prometheus.yml" in prometheus["command"]
    grafana = compose["services"]["grafana"]
    # "./host:/container[:ro]" -> container path: host folder
    host = {v.split(":")[1]: ROOT / v.split(":")[0] for v in grafana["volumes"] if v.startswith("./")}
    prov = host["/etc/grafana/provisioning"]
    (datasource,) = yaml.safe_load((prov / "datasources" / "prometheus.yml").read_text())["datasources"]
    assert datasource["type"] == "prometheus" and datasource["url"] == "http://prometheus:9090"
    (provider,) = yaml.safe_load((prov / "dashboards" / "shopbotly.yml").read_text())["providers"]
    assert provider["options"]["path"] in host, "the dashboards folder is mounted where the provider reads"
