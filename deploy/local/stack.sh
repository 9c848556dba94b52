#!/usr/bin/env bash
# The whole stack on one machine, no Docker: Kafka, topics, the four services and the CRM emulator,
# run by honcho (a Procfile runner) in the background. Logs and pids live in .run/stack (git-ignored).
#   deploy/local/stack.sh up|down|ps|logs
# Environment: SHOPBOTLY_CONFIG (config/shopbotly.yaml), SHOPBOTLY_ENV_FILE (config/demo.env),
#              STACK_READY_TIMEOUT (120 s).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
RUN="${SHOPBOTLY_RUN_DIR:-$ROOT/.run}/stack"
VENV="$ROOT/.venv/bin"
CONFIG="${SHOPBOTLY_CONFIG:-$ROOT/config/shopbotly.yaml}"
ENV_FILE="${SHOPBOTLY_ENV_FILE:-$ROOT/config/demo.env}"
READY_TIMEOUT="${STACK_READY_TIMEOUT:-120}"
PIDFILE="$RUN/honcho.pid"
LOG="$RUN/stack.log"

# name port command — the order is the start order.
SERVICES=(
  "crm-emulator 8090 shopbotly-crm-emulator"
  "ingest 8080 shopbotly-ingest"
  "mapper 9101 shopbotly-mapper"
  "crm-writer 9102 shopbotly-crm-writer"
  "order-reader 8081 shopbotly-order-reader"
)

log() { printf 'stack: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

running() {
  [[ -f "$PIDFILE" ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null
}

ready() { curl -fsS -m 2 "http://127.0.0.1:$1/readyz" >/dev/null 2>&1; }

write_procfile() {
  mkdir -p "$RUN/data"
  : >"$RUN/Procfile"
  for row in "${SERVICES[@]}"; do
    read -r name port cmd <<<"$row"
    [[ -x "$VENV/$cmd" ]] || die "$VENV/$cmd is missing; run make install"
    local data="$RUN/data/$name"
    mkdir -p "$data"
    printf '%s: exec env SHOPBOTLY_PORT=%s SHOPBOTLY_EMULATOR_PORT=%s SHOPBOTLY_DATA_DIR=%s %s\n' \
      "$name" "$port" "$port" "$data" "$VENV/$cmd" >>"$RUN/Procfile"
  done
}

up() {
  if running; then log "already running (honcho pid $(cat "$PIDFILE"))"; status_table; return 0; fi
  [[ -f "$CONFIG" ]] || die "config not found: $CONFIG"
  "$HERE/kafka.sh" start
  # shellcheck disable=SC1090
  set -a; [[ -f "$ENV_FILE" ]] && source "$ENV_FILE"; set +a
  export SHOPBOTLY_CONFIG="$CONFIG" SHOPBOTLY_RUN_DIR="${SHOPBOTLY_RUN_DIR:-$ROOT/.run}"
  "$VENV/shopbotly" config check "$CONFIG"
  "$VENV/shopbotly" topics create
  write_procfile
  : >"$LOG"
  log "starting services (logs: $LOG)"
  # exec: the pid recorded is honcho's own (a session leader, so `down` can signal its whole group), and no
  # wrapper shell keeps the caller's stdout open.
  (cd "$ROOT" && exec setsid nohup "$VENV/honcho" start -f "$RUN/Procfile" -d "$ROOT" >>"$LOG" 2>&1 </dev/null) &
  echo $! >"$PIDFILE"
  local deadline=$((SECONDS + READY_TIMEOUT)) pending
  while :; do
    pending=()
    for row in "${SERVICES[@]}"; do
      read -r name port _ <<<"$row"
      ready "$port" || pending+=("$name:$port")
    done
    ((${#pending[@]} == 0)) && break
    running || { tail -n 40 "$LOG" >&2; die "a service exited during start (see $LOG)"; }
    ((SECONDS < deadline)) || { tail -n 40 "$LOG" >&2; die "not ready after ${READY_TIMEOUT}s: ${pending[*]}"; }
    sleep 1
  done
  status_table
  cat <<MSG

ShopBotly is up. Every /readyz is green.
  ingest        http://127.0.0.1:8080   (OpenAPI: http://127.0.0.1:8080/docs)
  order-reader  http://127.0.0.1:8081   (OpenAPI: http://127.0.0.1:8081/docs)
  mapper        http://127.0.0.1:9101/metrics
  crm-writer    http://127.0.0.1:9102/metrics
  CRM emulator  http://127.0.0.1:8090/_emulator/state
  Kafka         127.0.0.1:9092

Try it (demo API key from config/demo.env):
  curl -sS -X POST http://127.0.0.1:8080/api/v1/leads \\
    -H "Authorization: Bearer \$(grep ^DEMO_API_KEY= config/demo.env | cut -d= -f2)" \\
    -H 'Content-Type: application/json' \\
    -d '{"email": "jane@example.com", "first_name": "Jane", "last_name": "Doe", "tags": ["newsletter"]}'
  curl -sS http://127.0.0.1:8090/_emulator/state | python3 -m json.tool | head -40
Or run: make demo      Logs: make logs      Stop: make down
MSG
}

down() {
  if running; then
    local pid; pid="$(cat "$PIDFILE")"
    log "stopping services (honcho pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    if kill -0 "$pid" 2>/dev/null; then kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true; fi
  else
    log "services not running"
  fi
  rm -f "$PIDFILE"
  "$HERE/kafka.sh" stop
}

status_table() {
  printf '%-14s %-6s %s\n' SERVICE PORT READY
  for row in "${SERVICES[@]}"; do
    read -r name port _ <<<"$row"
    if ready "$port"; then r=yes; else r=no; fi
    printf '%-14s %-6s %s\n' "$name" "$port" "$r"
  done
  printf '%-14s %-6s %s\n' kafka 9092 "$("$HERE/kafka.sh" status 2>/dev/null || echo stopped)"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  ps) status_table ;;
  logs) [[ -f "$LOG" ]] || die "no log yet: run make up"; tail -n 200 -F "$LOG" ;;
  *) echo "usage: $0 up|down|ps|logs" >&2; exit 2 ;;
esac
