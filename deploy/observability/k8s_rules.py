"""Write the Kubernetes PrometheusRule from alerts.rules.yml, the one source of ShopBotly's rules.

    uv run python deploy/observability/k8s_rules.py           # rewrite the PrometheusRule
    uv run python deploy/observability/k8s_rules.py --check   # exit 1 when it is out of date

The rule file's `groups:` block is copied verbatim (comments included) under the resource's `spec:`;
tests/observability/test_rules.py checks that both carry the same groups.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "alerts.rules.yml"
TARGET = HERE.parent / "k8s" / "components" / "monitoring" / "prometheusrule.yaml"

HEADER = """\
# GENERATED from deploy/observability/alerts.rules.yml by deploy/observability/k8s_rules.py: edit the
# source and run `uv run python deploy/observability/k8s_rules.py`. The compose Prometheus loads the source
# file; the Prometheus Operator loads this resource. tests/observability/test_rules.py fails when they differ.
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: shopbotly
spec:
"""


def render(source: str) -> str:
    """The PrometheusRule manifest for the rule file's text."""
    lines = source.splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.startswith("groups:"))
    except StopIteration:
        raise ValueError(f"{SOURCE}: no top-level `groups:` key") from None
    body = "\n".join(f"  {line}" if line.strip() else "" for line in lines[start:])
    return HEADER + body + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the PrometheusRule is out of date")
    args = parser.parse_args(argv)
    wanted = render(SOURCE.read_text())
    current = TARGET.read_text() if TARGET.exists() else ""
    if args.check:
        if current != wanted:
            print(f"{TARGET} is out of date; run: uv run python {Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    if current != wanted:
        TARGET.write_text(wanted)
        print(f"wrote {TARGET}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
