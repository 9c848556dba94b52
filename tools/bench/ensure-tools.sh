#!/usr/bin/env bash
# The load tools `make bench` drives: wrk (ingest, lookups throughput) and hey (lookups at a fixed rate).
# Missing ones are installed from Debian/Ubuntu packages when this runs as root with apt-get; otherwise it
# stops with what to install, before any benchmark has started.
set -euo pipefail

TOOLS=(wrk hey)  # each is also the name of its Debian package

missing=()
for tool in "${TOOLS[@]}"; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
((${#missing[@]})) || exit 0

if [[ $EUID -eq 0 ]] && command -v apt-get >/dev/null; then
  echo "bench: installing ${missing[*]} (apt-get)" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  for tool in "${missing[@]}"; do
    command -v "$tool" >/dev/null || { echo "bench: apt-get installed no '$tool' command" >&2; exit 1; }
  done
  exit 0
fi

cat >&2 <<MSG
bench: missing load tool(s): ${missing[*]}
  Debian/Ubuntu:  sudo apt-get update && sudo apt-get install -y ${missing[*]}
  elsewhere:      wrk from https://github.com/wg/wrk, hey from https://github.com/rakyll/hey
                  (go install github.com/rakyll/hey@latest); both must be on PATH.
(run \`make bench\` as root on Debian/Ubuntu and it installs them itself)
MSG
exit 1
