#!/usr/bin/env bash
# The whole stack on one machine, no Docker: Kafka, topics, the services and the CRM emulator, run in the
# background by deploy/local/supervise.py, which restarts a service that exits (backoff 1 s doubling to 30 s)
# while the others keep running, as Kubernetes would. Logs, pids and state live in .run/stack (git-ignored):
# logs/<service>.log, appended across restarts and `make up` runs (rotated past 50 MB), status.json.
#   deploy/local/stack.sh up|down|ps|logs
# Environment: SHOPBOTLY_CONFIG (config/shopbotly.yaml), SHOPBOTLY_ENV_FILE (config/demo.env),
#              STACK_READY_TIMEOUT (120 s), STACK_START_RESTARTS (3: `up` gives up on a service that exits
#              this often before it is ready), STACK_PORT_<SERVICE> (e.g. STACK_PORT_CRM_WRITER=9102),
#              STACK_SETUP_WAIT (60 s: how long crm-writer's init step, `shopbotly connections setup --apply`,
#              waits for the CRM emulator to answer), STACK_EMULATOR_CA (.run/tls/crm-emulator-ca.pem: the CRM
#              emulator serves HTTPS and writes its CA there; the config's `tls.ca_bundle` must name the same file).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
RUN="${SHOPBOTLY_RUN_DIR:-$ROOT/.run}/stack"
LOGS="$RUN/logs"
VENV="$ROOT/.venv/bin"
CONFIG="${SHOPBOTLY_CONFIG:-$ROOT/config/shopbotly.yaml}"
ENV_FILE="${SHOPBOTLY_ENV_FILE:-$ROOT/config/demo.env}"
READY_TIMEOUT="${STACK_READY_TIMEOUT:-120}"
START_RESTARTS="${STACK_START_RESTARTS:-3}"
SETUP_WAIT="${STACK_SETUP_WAIT:-60}"
# Not under SHOPBOTLY_RUN_DIR: config/shopbotly.yaml names this file (relative to the repository root).
EMULATOR_CA="${STACK_EMULATOR_CA:-$ROOT/.run/tls/crm-emulator-ca.pem}"
PIDFILE="$RUN/supervisor.pid"
SUPERVISE=("$VENV/python" "$HERE/supervise.py")

# name default-port command — the order is the start order.
SERVICES=(
  "crm-emulator 8090 shopbotly-crm-emulator"
  "ingest 8080 shopbotly-ingest"
  "mapper 9101 shopbotly-mapper"
  "crm-writer 9102 shopbotly-crm-writer"
  "order-reader 8081 shopbotly-order-reader"
  "console 8082 shopbotly-console"
)

log() { printf 'stack: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# The port of a service: STACK_PORT_<NAME> (upper case, - as _) or its default.
port_of() {
  local var="STACK_PORT_${1^^}"; var="${var//-/_}"
  echo "${!var:-$2}"
}

running() {
  [[ -f "$PIDFILE" ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null
}

# ready PORT [NAME]: its /readyz answers 200 (the CRM emulator over HTTPS, trusting its own CA).
ready() {
  if [[ ${2:-} == crm-emulator ]]; then
    curl -fsS -m 2 --cacert "$EMULATOR_CA" "https://127.0.0.1:$1/readyz" >/dev/null 2>&1
  else
    curl -fsS -m 2 "http://127.0.0.1:$1/readyz" >/dev/null 2>&1
  fi
}

# name pid state restarts last-exit, one line per service, from the supervisor's status.json.
status_rows() { "${SUPERVISE[@]}" status --run-dir "$RUN" 2>/dev/null || true; }

write_procfile() {
  mkdir -p "$RUN/data"
  : >"$RUN/Procfile"
  for row in "${SERVICES[@]}"; do
    read -r name port cmd <<<"$row"
    port="$(port_of "$name" "$port")"
    [[ -x "$VENV/$cmd" ]] || die "$VENV/$cmd is missing; run make install"
    local data="$RUN/data/$name"
    mkdir -p "$data"
    local start="exec $VENV/$cmd"
    if [[ $name == crm-emulator ]]; then
      # HTTPS with a local CA (made once, kept in EMULATOR_CA's folder, reused on restarts).
      start="$start --tls --tls-ca-path $EMULATOR_CA"
    fi
    if [[ $name == crm-writer ]]; then
      # Its init step, as a Kubernetes init container would be: the custom properties the mapping writes
      # exist in each CRM (the emulator starts as a fresh portal) before the first command is applied.
      # Idempotent, so a restart runs it again harmlessly.
      start="$VENV/shopbotly connections setup --apply --wait $SETUP_WAIT && $start"
    fi
    printf "%s: exec env SHOPBOTLY_PORT=%s SHOPBOTLY_EMULATOR_PORT=%s SHOPBOTLY_DATA_DIR=%s sh -c '%s'\n" \
      "$name" "$port" "$port" "$data" "$start" >>"$RUN/Procfile"
  done
}

# The service that exited START_RESTARTS times or more while `up` waited for it, if any.
crash_looping() {
  local name pid state restarts _
  while read -r name pid state restarts _; do
    ((restarts >= START_RESTARTS)) && { echo "$name"; return 0; }
  done < <(status_rows)
  return 1
}

up() {
  if running; then log "already running (supervisor pid $(cat "$PIDFILE"))"; status_table; return 0; fi
  [[ -f "$CONFIG" ]] || die "config not found: $CONFIG"
  "$HERE/kafka.sh" start
  # shellcheck disable=SC1090
  set -a; [[ -f "$ENV_FILE" ]] && source "$ENV_FILE"; set +a
  export SHOPBOTLY_CONFIG="$CONFIG" SHOPBOTLY_RUN_DIR="${SHOPBOTLY_RUN_DIR:-$ROOT/.run}"
  # The console's connections page asks the crm-writer of this stack.
  export SHOPBOTLY_CONSOLE_WRITER_URLS="[\"http://127.0.0.1:$(port_of crm-writer 9102)\"]"
  "$VENV/shopbotly" config check "$CONFIG"
  "$VENV/shopbotly" topics create
  write_procfile
  mkdir -p "$LOGS"
  kill_leftovers  # services of a supervisor that was itself killed
  rm -f "$RUN/status.json"
  log "starting services (logs: $LOGS/<service>.log)"
  # exec: the pid recorded is the supervisor's own, and no wrapper shell keeps the caller's stdout open.
  # Its own output (a crash of the supervisor itself) goes to logs/supervisor.log, appended.
  (cd "$ROOT" && exec setsid nohup "${SUPERVISE[@]}" run --run-dir "$RUN" --procfile "$RUN/Procfile" \
    --cwd "$ROOT" >>"$LOGS/supervisor.log" 2>&1 </dev/null) &
  # Renamed into place, never truncated and rewritten: the supervisor writes the same file (its own pid) as it
  # starts, and `running` must never read it half-written.
  echo $! >"$PIDFILE.tmp" && mv -f "$PIDFILE.tmp" "$PIDFILE"
  local deadline=$((SECONDS + READY_TIMEOUT)) pending looping
  while :; do
    pending=()
    for row in "${SERVICES[@]}"; do
      read -r name port _ <<<"$row"
      port="$(port_of "$name" "$port")"
      ready "$port" "$name" || pending+=("$name:$port")
    done
    ((${#pending[@]} == 0)) && break
    if ! running; then tail -n 20 "$LOGS/supervisor.log" >&2; die "the supervisor exited (see $LOGS/supervisor.log)"; fi
    if looping="$(crash_looping)"; then
      tail -n 40 "$LOGS/$looping.log" >&2
      stop_services
      die "$looping exited $START_RESTARTS times before it was ready (see $LOGS/$looping.log); stack stopped"
    fi
    if ((SECONDS >= deadline)); then
      for p in "${pending[@]}"; do log "--- ${p%%:*} ---"; tail -n 20 "$LOGS/${p%%:*}.log" >&2 || true; done
      die "not ready after ${READY_TIMEOUT}s: ${pending[*]} (still running; make down stops it)"
    fi
    sleep 1
  done
  status_table
  local ingest order_reader mapper crm_writer emulator
  ingest="$(port_of ingest 8080)" order_reader="$(port_of order-reader 8081)" mapper="$(port_of mapper 9101)"
  crm_writer="$(port_of crm-writer 9102)" emulator="$(port_of crm-emulator 8090)"
  local console; console="$(port_of console 8082)"
  cat <<MSG

ShopBotly is up. Every /readyz is green. A service that exits is restarted (make ps counts it).
The CRM emulator started as a fresh portal; crm-writer ran \`shopbotly connections setup --apply\` before its
first write (output in its log), so the properties the mapping writes exist: \`shopbotly connections check\`.
  ingest        http://127.0.0.1:$ingest   (OpenAPI: http://127.0.0.1:$ingest/docs)
  order-reader  http://127.0.0.1:$order_reader   (OpenAPI: http://127.0.0.1:$order_reader/docs)
  console       http://127.0.0.1:$console   (operator key: DEMO_OPERATOR_KEY in config/demo.env; docs/console.md)
  mapper        http://127.0.0.1:$mapper/metrics
  crm-writer    http://127.0.0.1:$crm_writer/metrics
  CRM emulator  https://127.0.0.1:$emulator/_emulator/state   (its CA: $EMULATOR_CA)
  Kafka         127.0.0.1:${KAFKA_PORT:-9092}
  Logs          $LOGS/<service>.log

Try it (demo API key from config/demo.env):
  curl -sS -X POST http://127.0.0.1:$ingest/api/v1/leads \\
    -H "Authorization: Bearer \$(grep ^DEMO_API_KEY= config/demo.env | cut -d= -f2)" \\
    -H 'Content-Type: application/json' \\
    -d '{"email": "jane@example.com", "first_name": "Jane", "last_name": "Doe", "tags": ["newsletter"]}'
  curl -sS --cacert $EMULATOR_CA https://127.0.0.1:$emulator/_emulator/state | python3 -m json.tool | head -40
Or run: make demo      Logs: make logs      Stop: make down
MSG
}

# SIGTERM the supervisor (it stops every service: SIGTERM, SIGKILL after 20 s); then SIGKILL whatever is
# left, the supervisor and any service it recorded (if the supervisor itself was killed, they are orphans).
stop_services() {
  if running; then
    local pid; pid="$(cat "$PIDFILE")"
    log "stopping services (supervisor pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
  else
    log "services not running"
  fi
  kill_leftovers
  rm -f "$PIDFILE"
}

kill_leftovers() {
  local name spid _
  while read -r name spid _; do
    [[ $spid =~ ^[0-9]+$ ]] && kill -0 "$spid" 2>/dev/null || continue
    log "killing $name (pid $spid), left behind"
    kill -KILL -- "-$spid" 2>/dev/null || kill -KILL "$spid" 2>/dev/null || true
  done < <(status_rows)
  # A stack started by an older stack.sh (honcho): stop it too rather than leave its ports taken.
  if [[ -f "$RUN/honcho.pid" ]]; then
    kill -TERM -- "-$(cat "$RUN/honcho.pid")" 2>/dev/null || true
    rm -f "$RUN/honcho.pid"
  fi
}

down() {
  stop_services
  "$HERE/kafka.sh" stop
}

status_table() {
  declare -A pid state restarts last
  local name p st r l
  while read -r name p st r l; do pid[$name]=$p state[$name]=$st restarts[$name]=$r last[$name]=$l; done < <(status_rows)
  running || for name in "${!state[@]}"; do state[$name]=stopped; done
  printf '%-14s %-6s %-8s %-8s %-9s %-6s %s\n' SERVICE PORT PID STATE RESTARTS READY "LAST EXIT"
  for row in "${SERVICES[@]}"; do
    read -r name p _ <<<"$row"
    p="$(port_of "$name" "$p")"
    if ready "$p" "$name"; then r=yes; else r=no; fi
    printf '%-14s %-6s %-8s %-8s %-9s %-6s %s\n' "$name" "$p" "${pid[$name]:--}" "${state[$name]:-stopped}" \
      "${restarts[$name]:-0}" "$r" "${last[$name]:--}"
  done
  printf '%-14s %-6s %s\n' kafka "${KAFKA_PORT:-9092}" "$("$HERE/kafka.sh" status 2>/dev/null || echo stopped)"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  ps) status_table ;;
  logs) compgen -G "$LOGS/*.log" >/dev/null || die "no log yet: run make up"; tail -n 50 -F "$LOGS"/*.log ;;
  *) echo "usage: $0 up|down|ps|logs" >&2; exit 2 ;;
esac
