#!/usr/bin/env bash
# Local single-node Apache Kafka (KRaft) for `make up` and the tests.
#   deploy/local/kafka.sh fetch|start|stop|status|wait|reset
# Jars come from Maven Central via mvn (pom.xml beside this file) into .cache/kafka/<version>/libs,
# or, where mvn is missing, from the official binary release. State lives in .run/kafka (git-ignored).
# Environment: KAFKA_VERSION, KAFKA_PORT (9092), KAFKA_CONTROLLER_PORT (9093), SHOPBOTLY_RUN_DIR (.run),
#              KAFKA_HEAP (512m), KAFKA_START_TIMEOUT (60 s).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
KAFKA_VERSION="${KAFKA_VERSION:-4.4.0}"
SCALA_VERSION="2.13"
PORT="${KAFKA_PORT:-9092}"
CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-9093}"
CACHE="${SHOPBOTLY_CACHE_DIR:-$ROOT/.cache}/kafka/$KAFKA_VERSION"
RUN="${SHOPBOTLY_RUN_DIR:-$ROOT/.run}/kafka-$PORT"
DATA="$RUN/data"
PIDFILE="$RUN/kafka.pid"
LOG="$RUN/kafka.log"
HEAP="${KAFKA_HEAP:-512m}"
START_TIMEOUT="${KAFKA_START_TIMEOUT:-60}"

log() { printf 'kafka: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

need_java() {
  command -v java >/dev/null || die "Java 17+ is required (apt-get install openjdk-17-jre-headless)"
}

fetch() {
  [[ -f "$CACHE/libs/.complete" ]] && return 0
  need_java
  rm -rf "$CACHE/libs.tmp"
  mkdir -p "$CACHE/libs.tmp"
  if command -v mvn >/dev/null; then
    log "resolving org.apache.kafka:kafka_$SCALA_VERSION:$KAFKA_VERSION from Maven Central"
    mvn -q -B -Dstyle.color=never -f "$HERE/kafka/pom.xml" dependency:copy-dependencies \
      -Dkafka.version="$KAFKA_VERSION" -DincludeScope=runtime \
      -DoutputDirectory="$CACHE/libs.tmp" >&2 || die "mvn could not resolve Kafka $KAFKA_VERSION"
  else
    local tgz="kafka_$SCALA_VERSION-$KAFKA_VERSION.tgz"
    local url="https://archive.apache.org/dist/kafka/$KAFKA_VERSION/$tgz"
    log "mvn not found; downloading $url"
    curl -fsSL "$url" -o "$CACHE/$tgz" || die "download failed: $url"
    tar -xzf "$CACHE/$tgz" -C "$CACHE/libs.tmp" --strip-components=2 "kafka_$SCALA_VERSION-$KAFKA_VERSION/libs"
    rm -f "$CACHE/$tgz"
  fi
  touch "$CACHE/libs.tmp/.complete"
  rm -rf "$CACHE/libs"
  mv "$CACHE/libs.tmp" "$CACHE/libs"
}

is_running() {
  [[ -f "$PIDFILE" ]] || return 1
  local pid; pid="$(cat "$PIDFILE" 2>/dev/null || true)"
  [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null && grep -q 'kafka.Kafka' "/proc/$pid/cmdline" 2>/dev/null
}

# The process exists (during start it may not have exec'd java yet, so its cmdline is not checked).
is_alive() {
  [[ -f "$PIDFILE" ]] && kill -0 "$(cat "$PIDFILE" 2>/dev/null)" 2>/dev/null
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; }

write_config() {
  mkdir -p "$RUN"
  cat >"$RUN/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$PORT
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs=$DATA
num.partitions=6
default.replication.factor=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=6
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
log.retention.check.interval.ms=60000
log.cleaner.backoff.ms=5000
PROPS
  cat >"$RUN/log4j2.yaml" <<'L4J'
Configuration:
  Appenders:
    Console:
      name: STDOUT
      PatternLayout:
        Pattern: "[%d] %p %m (%c)%n"
  Loggers:
    Root:
      level: WARN
      AppenderRef:
        - ref: STDOUT
    Logger:
      - name: kafka.server.KafkaRaftServer
        level: INFO
      - name: kafka.Kafka
        level: INFO
L4J
}

format_storage() {
  # A folder with meta.properties is formatted; anything else (half-formatted, crashed mid-format) is redone.
  if [[ -f "$DATA/meta.properties" ]]; then return 0; fi
  rm -rf "$DATA"
  mkdir -p "$DATA"
  local cluster_id
  cluster_id="$(java -cp "$CACHE/libs/*" kafka.tools.StorageTool random-uuid 2>/dev/null || true)"
  [[ -n "$cluster_id" ]] || cluster_id="$(java -cp "$CACHE/libs/*" org.apache.kafka.tools.StorageTool random-uuid 2>/dev/null || echo MkU3OEVBNTcwNTJENDM2Qk)"
  log "formatting KRaft storage in $DATA (cluster $cluster_id)"
  java -cp "$CACHE/libs/*" -Dlog4j2.configurationFile="$RUN/log4j2.yaml" kafka.tools.StorageTool format \
    -t "$cluster_id" -c "$RUN/server.properties" --standalone >>"$LOG" 2>&1 \
    || java -cp "$CACHE/libs/*" -Dlog4j2.configurationFile="$RUN/log4j2.yaml" kafka.tools.StorageTool format \
      -t "$cluster_id" -c "$RUN/server.properties" >>"$LOG" 2>&1 \
    || { rm -rf "$DATA"; die "storage format failed; see $LOG"; }
}

wait_ready() {
  local deadline=$((SECONDS + START_TIMEOUT))
  while (( SECONDS < deadline )); do
    if ! is_alive; then die "broker exited during start; last lines of $LOG:
$(tail -n 20 "$LOG" 2>/dev/null)"; fi
    if port_open && grep -q 'Kafka Server started\|\[KafkaRaftServer nodeId=1\] Kafka Server started' "$LOG" 2>/dev/null; then
      log "ready on 127.0.0.1:$PORT"
      return 0
    fi
    sleep 0.5
  done
  die "broker not ready after ${START_TIMEOUT}s; see $LOG"
}

start() {
  if is_running; then log "already running (pid $(cat "$PIDFILE")) on 127.0.0.1:$PORT"; return 0; fi
  rm -f "$PIDFILE"
  if port_open; then die "port $PORT is taken by another process; set KAFKA_PORT or stop it"; fi
  fetch
  write_config
  format_storage
  : >"$LOG"
  log "starting Kafka $KAFKA_VERSION on 127.0.0.1:$PORT"
  # setsid: the broker outlives the shell that started it and ignores its terminal's signals.
  setsid nohup java -Xms"$HEAP" -Xmx"$HEAP" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$RUN/log4j2.yaml" \
    -cp "$CACHE/libs/*" kafka.Kafka "$RUN/server.properties" >>"$LOG" 2>&1 < /dev/null &
  echo $! >"$PIDFILE"
  wait_ready
}

stop() {
  if ! is_running; then rm -f "$PIDFILE"; log "not running"; return 0; fi
  local pid; pid="$(cat "$PIDFILE")"
  log "stopping pid $pid"
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  if kill -0 "$pid" 2>/dev/null; then log "still alive after 30s, killing"; kill -KILL "$pid" 2>/dev/null || true; fi
  rm -f "$PIDFILE"
}

kill9() {
  is_running || { log "not running"; return 0; }
  kill -KILL "$(cat "$PIDFILE")" 2>/dev/null || true
  rm -f "$PIDFILE"
}

status() {
  if is_running; then echo "running pid=$(cat "$PIDFILE") bootstrap=127.0.0.1:$PORT version=$KAFKA_VERSION"; else echo "stopped"; return 1; fi
}

case "${1:-}" in
  fetch) fetch ;;
  start) start ;;
  stop) stop ;;
  kill) kill9 ;;
  restart) stop; start ;;
  status) status ;;
  wait) wait_ready ;;
  reset) stop; rm -rf "$RUN"; log "state removed" ;;
  classpath) fetch; echo "$CACHE/libs/*" ;;
  *) echo "usage: $0 fetch|start|stop|kill|restart|status|wait|reset|classpath" >&2; exit 2 ;;
esac
