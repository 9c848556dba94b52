#!/usr/bin/env bash
# Offline validation of what cannot run here: shell scripts, the Dockerfile, docker-compose.yml,
# Kubernetes overlays and Prometheus rules. Each check runs when its files exist.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN="${UV:-uv} run --frozen --all-packages"
fail=0

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
