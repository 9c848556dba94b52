#!/usr/bin/env bash
# Render every overlay under deploy/k8s/overlays and validate the output offline (called by deploy/lint.sh):
#   - built-in kinds against the Kubernetes JSON Schemas bundled in kubernetes-validate (strict: unknown
#     fields are errors), for Kubernetes $K8S_VERSION;
#   - custom resources (Strimzi, KEDA, Prometheus Operator) against the schemas vendored in schemas/
#     (regenerate with schemas/update.sh); a kind with no schema fails, unless listed in SKIP_KINDS;
#   - PrometheusRule groups with `promtool check rules` when promtool is installed.
# kustomize is pinned ($KUSTOMIZE_VERSION) and installed once into .tools/bin with `go install` from the Go
# module proxy; without Go, `kubectl kustomize` is used if present.
#   deploy/k8s/validate.sh [overlay ...]        deploy/k8s/validate.sh --print-kustomize
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
KUSTOMIZE_VERSION="${KUSTOMIZE_VERSION:-v5.8.2}"
K8S_VERSION="${K8S_VERSION:-1.32.0}"
TOOLS="$ROOT/.tools/bin"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"

log() { printf 'k8s: %s\n' "$*" >&2; }

# Prints a command that renders a kustomization directory given as its last argument.
kustomize_cmd() {
  local bin="$TOOLS/kustomize"
  if [[ -x "$bin" ]] && [[ "$("$bin" version 2>/dev/null)" == "$KUSTOMIZE_VERSION" ]]; then
    echo "$bin build"; return 0
  fi
  if command -v go >/dev/null; then
    log "installing kustomize $KUSTOMIZE_VERSION into $TOOLS (go install, once)"
    mkdir -p "$TOOLS"
    if GOBIN="$TOOLS" GOFLAGS=-buildvcs=false go install "sigs.k8s.io/kustomize/kustomize/v5@$KUSTOMIZE_VERSION" >&2; then
      echo "$bin build"; return 0
    fi
    log "go install failed"
  fi
  if command -v kubectl >/dev/null && kubectl kustomize --help >/dev/null 2>&1; then
    log "using kubectl kustomize ($(kubectl version --client 2>/dev/null | grep -i kustomize || echo 'version unknown'))"
    echo "kubectl kustomize"; return 0
  fi
  log "error: no kustomize: install Go (go install sigs.k8s.io/kustomize/kustomize/v5@$KUSTOMIZE_VERSION) or kubectl"
  return 1
}

if [[ "${1:-}" == "--print-kustomize" ]]; then kustomize_cmd; exit 0; fi

KUSTOMIZE="$(kustomize_cmd)"
if (($#)); then overlays=("$@"); else overlays=("$HERE"/overlays/*/); fi
export KUSTOMIZE K8S_VERSION
exec "$PYTHON" "$HERE/validate.py" "${overlays[@]%/}"
