#!/usr/bin/env bash
# Offline validation of what cannot run here: shell scripts, the Dockerfile, docker-compose.yml,
# Kubernetes overlays and Prometheus rules. Each check runs when its files exist.
# uv: $UV (the Makefile passes the one it installed), else `uv` on the PATH, else .tools/bin/uv.
# promtool (Debian package `prometheus`) is installed with apt-get when missing and this runs as root;
# otherwise the run fails and says what to install: a check that silently does not run is no check.
set -euo pipefail
cd "$(dirname "$0")/.."
UV="${UV:-$(command -v uv 2>/dev/null || echo "$PWD/.tools/bin/uv")}"
[[ -x "$UV" ]] || command -v "$UV" >/dev/null || { echo "lint: uv not found ($UV); run make install" >&2; exit 1; }
RUN="$UV run --frozen --all-packages"
fail=0

ensure_promtool() {
  command -v promtool >/dev/null && return 0
  if [[ $EUID -eq 0 ]] && command -v apt-get >/dev/null; then
    echo "lint: installing promtool (apt-get install prometheus)" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
    command -v promtool >/dev/null && return 0
  fi
  echo "lint: promtool is required: sudo apt-get install prometheus (or put promtool on the PATH)" >&2
  return 1
}

echo "lint: bash -n deploy/**/*.sh"
for f in $(git ls-files '*.sh' .ci/run); do bash -n "$f" || fail=1; done

# The one Dockerfile at the root (every image is a target of it), and any other one git knows of, tracked or
# new; a tracked file deleted in the working tree is not there to lint.
mapfile -t dockerfiles < <(git ls-files --cached --others --exclude-standard '*Dockerfile' 2>/dev/null \
  | sort -u | while read -r f; do [[ ! -f $f ]] || echo "$f"; done)
if ((${#dockerfiles[@]})); then
  echo "lint: hadolint ${dockerfiles[*]}"
  $RUN hadolint "${dockerfiles[@]}" || fail=1
fi

if [[ -f docker-compose.yml ]]; then
  echo "lint: docker-compose.yml against the compose-spec schema"
  $RUN check-jsonschema --builtin-schema vendor.compose-spec docker-compose.yml || fail=1
fi

# Before the overlays: deploy/k8s/validate.sh checks their PrometheusRules with promtool when it is there.
have_promtool=0
ensure_promtool && have_promtool=1 || fail=1

if [[ -x deploy/k8s/validate.sh ]]; then
  echo "lint: kustomize overlays"
  deploy/k8s/validate.sh || fail=1
fi

if [[ -d deploy/observability ]] && ls deploy/observability/*rules*.yml >/dev/null 2>&1; then
  if ((have_promtool)); then
    echo "lint: promtool check rules"
    promtool check rules deploy/observability/*rules*.yml || fail=1
  fi
fi
exit $fail
