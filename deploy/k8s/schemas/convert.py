"""Turn CRD schemas into strict JSON Schemas for deploy/k8s/validate.py (run by update.sh, not at lint time).

Two inputs: CustomResourceDefinition YAML (Strimzi, generated from its Maven artifacts) and pydantic models
generated from upstream CRDs (KEDA, Prometheus Operator, from PyPI). Output: one JSON file per
apiVersion/kind, where every object that lists its properties refuses unknown ones (as the API server's
structural-schema pruning and `kubectl apply --validate=strict` do), except where the CRD preserves
unknown fields. Descriptions are dropped: they are most of the size and validate nothing.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path
from typing import Any

import yaml

DROP = {
    "description",
    "title",
    "default",
    "x-kubernetes-validations",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-map-type",
    "x-kubernetes-int-or-string",
}


def strict(node: Any, *, branch: bool = False) -> Any:
    """Drop documentation, and close every object that lists its properties.

    Members of oneOf/anyOf/allOf/not only constrain (structural schemas keep the shape outside them), so
    they are never closed themselves.
    """
    if isinstance(node, list):
        return [strict(n, branch=branch) for n in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in ("properties", "patternProperties", "$defs") and isinstance(value, dict):
            # A map of names to schemas: a field may well be called `description` or `default`.
            out[key] = {name: strict(sub) for name, sub in value.items()}
        elif key not in DROP:
            out[key] = strict(value, branch=key in ("oneOf", "anyOf", "allOf", "not"))
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    preserve = out.pop("x-kubernetes-preserve-unknown-fields", False)
    if "properties" in out and "additionalProperties" not in out and not preserve and not branch:
        out["additionalProperties"] = False
    return out


def from_crd(path: Path, outdir: Path) -> list[str]:
    written = []
    for crd in yaml.safe_load_all(path.read_text()):
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            schema = strict(version["schema"]["openAPIV3Schema"])
            schema["properties"]["metadata"] = {"type": "object"}  # ObjectMeta: checked by the API server
            written.append(write(outdir, f"{group}/{version['name']}", kind, schema, source=str(path.name)))
    return written


def from_model(target: str, api_version: str, outdir: Path, source: str) -> str:
    module, _, name = target.partition(":")
    model = getattr(importlib.import_module(module), name)
    schema = model.model_json_schema(by_alias=True, mode="validation")
    root = strict(_unnull(schema))
    root["properties"]["metadata"] = {"type": "object"}
    return write(outdir, api_version, name, root, source=source)


def _unnull(node: Any) -> Any:
    """pydantic writes Optional[X] as anyOf [X, null]; Kubernetes treats an absent field and null alike."""
    if isinstance(node, list):
        return [_unnull(n) for n in node]
    if not isinstance(node, dict):
        return node
    node = {k: _unnull(v) for k, v in node.items()}
    options = node.get("anyOf")
    if isinstance(options, list) and {"type": "null"} in options:
        rest = [o for o in options if o != {"type": "null"}]
        node.pop("anyOf")
        node.pop("default", None)
        if len(rest) == 1:
            node.update(rest[0])
        else:
            node["anyOf"] = rest
    return node


def write(outdir: Path, api_version: str, kind: str, schema: dict[str, Any], source: str) -> str:
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", "x-source": source, **schema}
    name = f"{api_version.replace('/', '_')}_{kind.lower()}.json"
    (outdir / name).write_text(json.dumps(schema, indent=1, sort_keys=True) + "\n")
    return name


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--crd", type=Path, action="append", default=[])
    p.add_argument("--model", action="append", default=[], help="module:Class=apiVersion@source")
    args = p.parse_args()
    for crd in args.crd:
        for name in from_crd(crd, args.out):
            print("wrote", name)
    for spec in args.model:
        target, _, rest = spec.partition("=")
        api_version, _, source = rest.partition("@")
        print("wrote", from_model(target, api_version, args.out, source))
    return 0


if __name__ == "__main__":
    sys.exit(main())
