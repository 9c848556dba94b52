#!/usr/bin/env bash
# What `make test` needs besides Python and Java, from Debian's packages: promtool and prometheus (the rule,
# dashboard and live Prometheus tests) and chromium with chromium-driver (the console's browser test).
# Installed with apt-get when missing and this runs as root; otherwise it says what to install and fails, so a
# test never silently does not run on a machine that could have run it.
set -euo pipefail

missing=()
command -v promtool >/dev/null || missing+=(prometheus)
command -v chromium >/dev/null || missing+=(chromium)
command -v chromedriver >/dev/null || missing+=(chromium-driver)
((${#missing[@]} == 0)) && exit 0

if [[ $EUID -eq 0 ]] && command -v apt-get >/dev/null; then
  echo "test-tools: installing ${missing[*]} (apt-get)" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  exit 0
fi
echo "test-tools: missing ${missing[*]}: sudo apt-get install ${missing[*]}" >&2
exit 1
