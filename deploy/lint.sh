#!/usr/bin/env bash
# Offline validation of what cannot run here: shell scripts, Dockerfiles, docker-compose.yml,
# Kubernetes overlays and Prometheus rules. Each check runs when its files exist.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN="${UV:-uv} run --frozen --all-packages"
fail=0

echo "lint: bash -n deploy/**/*.sh"
for f in $(git ls-files '*.sh' .ci/run); do bash -n "$f" || fail=1; done

mapfile -t dockerfiles < <(git ls-files '*Dockerfile' 2>/dev/null; ls services/*/Dockerfile tools/*/Dockerfile 2>/dev/null)
if ((${#dockerfiles[@]})); then
  echo "lint: hadolint ${#dockerfiles[@]} Dockerfiles"
  $RUN hadolint $(printf '%s\n' "${dockerfiles[@]}" | sort -u) || fail=1
fi

if [[ -f docker-compose.yml ]]; then
  echo "lint: docker-compose.yml against the compose-spec schema"
  $RUN check-jsonschema --builtin-schema vendor.compose-spec docker-compose.yml || fail=1
fi

if [[ -x deploy/k8s/validate.sh ]]; then
  echo "lint: kustomize overlays"
  deploy/k8s/validate.sh || fail=1
fi

if [[ -d deploy/observability ]] && ls deploy/observability/*rules*.yml >/dev/null 2>&1; then
  if command -v promtool >/dev/null; then
    echo "lint: promtool check rules"
    promtool check rules deploy/observability/*rules*.yml || fail=1
  else
    echo "lint: promtool not installed (apt-get install prometheus); rules checked in make test" >&2
  fi
fi
exit $fail
