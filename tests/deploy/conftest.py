"""Fixtures for the deployment checks: rendered kustomize overlays, docker-compose.yml, the Settings classes.

The overlays are rendered with the pinned kustomize of deploy/k8s/validate.sh (installed into .tools/bin on
first use, or `kubectl kustomize` where Go is missing).
"""

from __future__ import annotations

import importlib
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import AliasChoices
from pydantic_settings import BaseSettings

from shopbotly.common.kafka import KafkaSettings
from shopbotly.common.settings import ServiceSettings

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = sorted(p.name for p in (K8S / "overlays").iterdir() if (p / "kustomization.yaml").exists())

# DESIGN.md "Local defaults": the port each service listens on, and its Python package.
SERVICES: dict[str, tuple[int, str]] = {
    "ingest": (8080, "shopbotly.ingest"),
    "order-reader": (8081, "shopbotly.order_reader"),
    "console": (8082, "shopbotly.console"),
    "mapper": (9101, "shopbotly.mapper"),
    "crm-writer": (9102, "shopbotly.crm_writer"),
}
EMULATOR = (8090, "shopbotly.crm_emulator")


@dataclass(frozen=True)
class Rendered:
    overlay: str
    docs: list[dict[str, Any]]

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [d for d in self.docs if d["kind"] == kind]

    def one(self, kind: str, name: str) -> dict[str, Any]:
        found = [d for d in self.of_kind(kind) if d["metadata"]["name"] == name]
        assert len(found) == 1, f"{self.overlay}: expected one {kind}/{name}, found {len(found)}"
        return found[0]

    def configmap(self, name: str) -> dict[str, str]:
        """A generated ConfigMap by its name before kustomize's hash suffix."""
        found = [d for d in self.of_kind("ConfigMap") if d["metadata"]["name"].rsplit("-", 1)[0] == name]
        assert len(found) == 1, f"{self.overlay}: expected one ConfigMap {name}-<hash>"
        return dict(found[0].get("data", {}))

    def workloads(self) -> dict[str, dict[str, Any]]:
        return {
            d["metadata"]["name"]: d
            for d in self.docs
            if d["kind"] in ("Deployment", "StatefulSet") and d["metadata"]["name"] in SERVICES
        }

    def container_env(self, workload: dict[str, Any]) -> dict[str, Any]:
        """Every environment variable of the `server` container: envFrom ConfigMaps first, env over them."""
        (container,) = workload["spec"]["template"]["spec"]["containers"]
        env: dict[str, Any] = {}
        for source in container.get("envFrom", []):
            ref = source.get("configMapRef")
            assert ref is not None, f"{workload['metadata']['name']}: envFrom only from ConfigMaps: {source}"
            cm = [d for d in self.of_kind("ConfigMap") if d["metadata"]["name"] == ref["name"]]
            assert cm, f"{workload['metadata']['name']}: envFrom ConfigMap {ref['name']} is not rendered"
            env.update(cm[0].get("data", {}))
        for item in container.get("env", []):
            env[item["name"]] = item.get("value", item.get("valueFrom"))
        return env


def kustomize_command() -> list[str]:
    result = subprocess.run(
        [str(K8S / "validate.sh"), "--print-kustomize"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, f"no kustomize to render the overlays with:\n{result.stderr}"
    return shlex.split(result.stdout.strip())


@pytest.fixture(scope="session")
def rendered() -> dict[str, Rendered]:
    command = kustomize_command()
    out: dict[str, Rendered] = {}
    for overlay in OVERLAYS:
        result = subprocess.run(
            [*command, str(K8S / "overlays" / overlay)], capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, f"kustomize build {overlay} failed:\n{result.stderr}"
        out[overlay] = Rendered(overlay, [d for d in yaml.safe_load_all(result.stdout) if d])
    return out


@pytest.fixture(scope="session")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


def env_names(cls: type[BaseSettings]) -> set[str]:
    """The environment variable names a pydantic-settings class reads (prefix + field name, or its alias)."""
    prefix = str(cls.model_config.get("env_prefix", ""))
    names = set()
    for field_name, field in cls.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseSettings):
            continue  # a nested settings class reads its own prefix (ServiceSettings.kafka)
        alias = field.validation_alias
        if isinstance(alias, str):
            names.add(alias.upper())
        elif isinstance(alias, AliasChoices):
            names.update(str(choice).upper() for choice in alias.choices if isinstance(choice, str))
        else:
            names.add((prefix + field_name).upper())
    return names


SHARED_ENV = env_names(ServiceSettings) | env_names(KafkaSettings)


def service_settings(package: str) -> type[BaseSettings] | None:
    """The service's own settings class, when its engineers have written it: `Settings`, or else the one
    BaseSettings subclass defined in shopbotly.<svc>.settings."""
    try:
        module = importlib.import_module(f"{package}.settings")
    except ModuleNotFoundError as exc:
        if exc.name in (f"{package}.settings", package):
            return None
        raise
    settings = getattr(module, "Settings", None)
    if settings is None:
        own = [
            obj
            for obj in vars(module).values()
            if isinstance(obj, type) and issubclass(obj, BaseSettings) and obj.__module__ == module.__name__
        ]
        assert len(own) <= 1, (
            f"{module.__name__}: several settings classes {own}; name the service's Settings"
        )
        settings = own[0] if own else None
    return settings


def declared_env(package: str) -> set[str]:
    cls = service_settings(package)
    return SHARED_ENV | (env_names(cls) if cls is not None else set())
