"""The Dockerfile and docker-compose.yml agree with the workspace, the ports of DESIGN.md, the settings."""

from __future__ import annotations

import importlib.util
import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest
import yaml

from .conftest import EMULATOR, ROOT, SERVICES, declared_env

pytestmark = pytest.mark.unit

DOCKERFILE = ROOT / "Dockerfile"
# Target of the Dockerfile -> (workspace packages it installs, its port, the port's variable)
IMAGES: dict[str, tuple[list[str], int, str]] = {
    "ingest": (["shopbotly-ingest"], 8080, "SHOPBOTLY_PORT"),
    "mapper": (["shopbotly-mapper", "shopbotly-cli"], 9101, "SHOPBOTLY_PORT"),
    "crm-writer": (["shopbotly-crm-writer"], 9102, "SHOPBOTLY_PORT"),
    "order-reader": (["shopbotly-order-reader"], 8081, "SHOPBOTLY_PORT"),
    "console": (["shopbotly-console", "shopbotly-cli", "shopbotly-mapper"], 8082, "SHOPBOTLY_PORT"),
    "crm-emulator": (["shopbotly-crm-emulator"], 8090, "SHOPBOTLY_EMULATOR_PORT"),
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


@dataclass
class Stage:
    name: str
    base: str
    steps: list[tuple[str, str]] = field(default_factory=list)


def _stages(dockerfile: Path) -> dict[str, Stage]:
    """The build stages by name, each with its instructions (continuation lines joined)."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    stages: dict[str, Stage] = {}
    current: Stage | None = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        op, _, rest = line.partition(" ")
        if op.upper() == "FROM":
            base, _, name = re.sub(r"\s+as\s+", " AS ", rest.strip(), flags=re.IGNORECASE).partition(" AS ")
            current = stages[name.strip()] = Stage(name.strip(), base.strip())
        elif current is not None:
            current.steps.append((op.upper(), rest.strip()))
    return stages


def _chain(stages: dict[str, Stage], target: str) -> list[Stage]:
    """The stage `target` and the stages it is built FROM, base first."""
    chain = [stages[target]]
    while chain[0].base in stages:
        chain.insert(0, stages[chain[0].base])
    return chain


def _compose_builds(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: svc["build"] for name, svc in compose["services"].items() if "build" in svc}


def test_dockerfile_builds_the_locked_packages_in_a_build_stage_and_runs_as_non_root() -> None:
    stages = _stages(DOCKERFILE)
    build, runtime = stages["build"], stages["runtime"]
    # uv only in the build stage; the runtime stage takes the venv and nothing else from it.
    assert [rest for op, rest in build.steps if op == "COPY" and rest.startswith("--from")] == [
        "--from=uv /uv /usr/local/bin/uv"
    ]
    assert [rest for op, rest in runtime.steps if op == "COPY"] == ["--from=build /app/.venv /app/.venv"]
    python = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", DOCKERFILE.read_text(), re.MULTILINE)
    assert python and "slim" in python[1], "the images are based on python:3.11-slim"
    assert build.base == runtime.base == "${PYTHON_IMAGE}"
    syncs = [(i, rest) for i, (op, rest) in enumerate(build.steps) if op == "RUN" and "uv sync" in rest]
    assert len(syncs) == 2, "one sync for the dependencies, one for the workspace packages"
    (deps_at, deps), (members_at, members) = syncs
    for sync in (deps, members):
        assert "--frozen" in sync and "--no-dev" in sync
    assert "--no-install-workspace" in deps and "--no-editable" in members
    assert '--package "${package}"' in members and "for package in ${PACKAGES}" in members
    # The dependency layer is built from the lock file alone, before any member's sources arrive.
    copied_before = [rest for op, rest in build.steps[:deps_at] if op == "COPY" and "--from" not in rest]
    assert copied_before == ["pyproject.toml uv.lock ./"], copied_before
    # Declared after it, so that the layer is the same for every image.
    assert ("ARG", "PACKAGES") in build.steps[deps_at:members_at]
    users = [rest for op, rest in runtime.steps if op == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), "the runtime stage runs as non-root"
    assert any(op == "HEALTHCHECK" and "/healthz" in rest for op, rest in runtime.steps)


@pytest.mark.parametrize("target", sorted(IMAGES))
def test_dockerfile_target_exposes_its_port_and_starts_its_console_script(target: str) -> None:
    packages, port, port_var = IMAGES[target]
    members = _members()
    stages = _stages(DOCKERFILE)
    chain = _chain(stages, target)
    assert [s.name for s in chain][:1] == ["runtime"], f"{target} is built on the runtime stage"
    steps = [step for stage in chain for step in stage.steps]
    users = [rest for op, rest in steps if op == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), "the target runs as non-root"
    assert [rest for op, rest in steps if op == "EXPOSE"] == [str(port)]
    env = " ".join(rest for op, rest in steps if op == "ENV")
    assert f"{port_var}={port}" in env
    if "SHOPBOTLY_DATA_DIR=" in env:  # a volume at run time, owned by the unprivileged user in the image
        data_dir = re.search(r"SHOPBOTLY_DATA_DIR=(\S+)", env)
        assert data_dir and any(
            op == "RUN" and "install -d" in rest and data_dir[1] in rest for op, rest in steps
        )
    (entrypoint,) = [json.loads(rest) for op, rest in steps if op == "ENTRYPOINT"]
    scripts = members[packages[0]][1]["project"]["scripts"]
    assert entrypoint == [next(iter(scripts))], "the entry point is the package's console script"
    # Every workspace member the packages need is in a folder the build stage copies.
    copied = {rest.split()[0] for op, rest in stages["build"].steps if op == "COPY" and "--from" not in rest}
    for name in _workspace_closure(packages, members):
        assert members[name][0].parts[0] in copied, f"{target}: {members[name][0]} is not copied"


def test_compose_builds_every_image_from_the_dockerfile_with_its_packages(compose: dict[str, Any]) -> None:
    builds = _compose_builds(compose)
    assert builds, "docker-compose.yml builds the images"
    for name, build in builds.items():
        assert build["context"] == "." and (ROOT / build["dockerfile"]) == DOCKERFILE, name
        target = build["target"]
        assert target in IMAGES, f"{name}: target {target} is not a deployable of the Dockerfile"
        assert build["args"]["PACKAGES"].split() == IMAGES[target][0], name
        assert compose["services"][name]["image"].startswith(f"shopbotly/{target}:"), name
    assert {b["target"] for b in builds.values()} == set(IMAGES)


def test_dockerignore_keeps_local_state_out_of_the_build_context() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*", "allow-list: everything is excluded first"
    allowed = {p[1:] for p in patterns if p.startswith("!")}
    copied = set()
    for stage in _stages(DOCKERFILE).values():
        for op, rest in stage.steps:
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
    expected = {name: port for name, (port, _) in SERVICES.items()}
    expected["crm-emulator"] = EMULATOR[0]
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


def _workspace_dependencies(package: str, seen: set[str] | None = None) -> set[str]:
    """The workspace packages `package` needs, itself included (from each member's pyproject.toml)."""
    seen = set() if seen is None else seen
    if package in seen:
        return seen
    seen.add(package)
    members = {
        tomllib.loads(p.read_text())["project"]["name"]: p
        for p in ROOT.glob("*/*/pyproject.toml")
        if "project" in tomllib.loads(p.read_text())
    }
    project = tomllib.loads(members[package].read_text())["project"]
    for requirement in project.get("dependencies", []):
        name = re.split(r"[<>=!~\[ ;]", requirement, maxsplit=1)[0]
        if name in members:
            _workspace_dependencies(name, seen)
    return seen


def test_no_image_installs_the_testkit(compose: dict[str, Any]) -> None:
    """Test doubles, signers and receivers live in shopbotly-testkit, which no deployable depends on."""
    builds = _compose_builds(compose)
    assert builds, "no image is built by compose"
    for build in builds.values():
        target, packages = build["target"], build["args"]["PACKAGES"]
        needed = set().union(*(_workspace_dependencies(p) for p in packages.split()))
        assert "shopbotly-testkit" not in needed, f"the {target} image would install the testkit"
    assert not list(ROOT.glob("*/*/src/shopbotly/*/testing.py")), "a testing.py is back under a package's src"
