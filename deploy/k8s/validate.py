"""Render kustomize overlays and validate every object offline; exit 1 naming each invalid object.

Built-in kinds: the Kubernetes JSON Schemas bundled in kubernetes-validate, strict (unknown fields fail).
Custom resources: the strict schemas vendored in deploy/k8s/schemas (see schemas/update.sh).
PrometheusRule groups: `promtool check rules`, when promtool is on the PATH.
Called by validate.sh, which provides KUSTOMIZE (the render command) and K8S_VERSION.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import kubernetes_validate  # type: ignore[import-untyped]
import yaml

HERE = Path(__file__).resolve().parent
SCHEMAS = HERE / "schemas"

# Kinds that are deliberately not schema-checked, with the reason printed on every run. Empty today:
# every kind the overlays render has a schema.
SKIP_KINDS: dict[tuple[str, str], str] = {}


def render(overlay: Path) -> list[dict[str, Any]]:
    cmd = [*shlex.split(os.environ.get("KUSTOMIZE", "kustomize build")), str(overlay)]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"{overlay}: render failed ({shlex.join(cmd)}):\n{result.stderr.strip()}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def crd_schema(api_version: str, kind: str) -> dict[str, Any] | None:
    path = SCHEMAS / f"{api_version.replace('/', '_')}_{kind.lower()}.json"
    return json.loads(path.read_text()) if path.exists() else None


def is_builtin(api_version: str) -> bool:
    group = api_version.rpartition("/")[0]
    return group == "" or group.endswith(".k8s.io") or "." not in group


def where(error: jsonschema.ValidationError) -> str:
    return "/".join(str(p) for p in error.absolute_path) or "(root)"


def validate_doc(doc: dict[str, Any], k8s_version: str) -> list[str]:
    api_version, kind = doc.get("apiVersion", ""), doc.get("kind", "")
    if (api_version, kind) in SKIP_KINDS:
        return []
    if is_builtin(api_version):
        try:
            kubernetes_validate.validate(doc, k8s_version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            return [f"{where(exc)}: {exc.message}"]
        except kubernetes_validate.SchemaNotFoundError as exc:
            return [exc.message]
        return []
    schema = crd_schema(api_version, kind)
    if schema is None:
        return [f"no schema for {api_version} {kind} in {SCHEMAS} (vendor it with schemas/update.sh)"]
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
    return [f"{where(e)}: {e.message}" for e in errors]


def check_rules(overlay: Path, docs: list[dict[str, Any]]) -> list[str]:
    rules = [d for d in docs if d.get("kind") == "PrometheusRule"]
    if not rules:
        return []
    promtool = shutil.which("promtool")
    if promtool is None:
        print(
            f"k8s: {overlay.name}: promtool not installed (apt-get install prometheus): "
            f"{len(rules)} PrometheusRule(s) checked against the schema only",
            file=sys.stderr,
        )
        return []
    problems = []
    for rule in rules:
        with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as f:
            yaml.safe_dump({"groups": rule["spec"]["groups"]}, f)
        result = subprocess.run(
            [promtool, "check", "rules", f.name], capture_output=True, text=True, check=False
        )
        Path(f.name).unlink()
        if result.returncode != 0:
            problems.append(
                f"PrometheusRule/{rule['metadata']['name']}: promtool: "
                f"{(result.stdout + result.stderr).strip()}"
            )
        else:
            count = sum(len(g["rules"]) for g in rule["spec"]["groups"])
            print(
                f"k8s: {overlay.name}: PrometheusRule/{rule['metadata']['name']}: promtool check rules: "
                f"{count} rules ok"
            )
    return problems


def main(overlays: list[str]) -> int:
    k8s_version = os.environ.get("K8S_VERSION", "1.32.0")
    for (api_version, kind), reason in SKIP_KINDS.items():
        print(f"k8s: not schema-checked: {api_version} {kind}: {reason}", file=sys.stderr)
    failed = 0
    for name in overlays:
        overlay = Path(name)
        docs = render(overlay)
        problems: list[str] = []
        for doc in docs:
            ident = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
            problems += [f"{ident}: {p}" for p in validate_doc(doc, k8s_version)]
        problems += check_rules(overlay, docs)
        kinds = len({(d["apiVersion"], d["kind"]) for d in docs})
        if problems:
            failed += 1
            print(f"k8s: {overlay.name}: {len(problems)} problem(s) in {len(docs)} objects:", file=sys.stderr)
            for p in problems:
                print(f"  {p}", file=sys.stderr)
        else:
            print(
                f"k8s: {overlay.name}: {len(docs)} objects of {kinds} kinds valid "
                f"(Kubernetes {k8s_version}, strict)"
            )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
