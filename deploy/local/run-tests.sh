#!/usr/bin/env bash
# `make test`: every test, in two pytest processes side by side so the suite fits its 20-minute budget on a
# 2-core machine. The stack suites (tests/e2e and tests/fault: whole stacks as processes, minutes of
# deliberate outages, mostly waiting) run in one; everything else (unit, component, integration with the real
# broker, deploy and observability checks) in the other. Both share the local broker (deploy/local/kafka.sh on
# KAFKA_PORT, 9092), started here first when it is down, so the two never race to start it, and stopped at
# the end when this script started it. Each process has its own base temp folder and its own output: the
# stack suites' output is printed after the rest, so neither interleaves with the other.
#   deploy/local/run-tests.sh [pytest options…]     options go to both processes (e.g. --durations=25)
# Environment: TEST_JOBS=1 runs one process, as before (e.g. to read one uninterrupted report).
set -uo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
UV="${UV:-$ROOT/.tools/bin/uv}"
PYTEST=("$UV" run --frozen --all-packages pytest)
STACK_SUITES=(tests/e2e tests/fault)

cd "$ROOT"
if [[ "${TEST_JOBS:-2}" == 1 ]]; then
  exec "${PYTEST[@]}" "$@"
fi

export SHOPBOTLY_KAFKA_BOOTSTRAP="${SHOPBOTLY_KAFKA_BOOTSTRAP:-127.0.0.1:${KAFKA_PORT:-9092}}"
export KAFKA_PORT="${SHOPBOTLY_KAFKA_BOOTSTRAP##*:}"
started_broker=0
broker_answers() { (exec 3<>"/dev/tcp/${SHOPBOTLY_KAFKA_BOOTSTRAP%:*}/$KAFKA_PORT") 2>/dev/null; }
if ! broker_answers; then
  "$HERE/kafka.sh" start || exit 1
  started_broker=1
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/shopbotly-tests.XXXXXX")"
cleanup() {
  [[ -n "${stack_pid:-}" ]] && kill -TERM "$stack_pid" 2>/dev/null
  ((started_broker)) && "$HERE/kafka.sh" stop >/dev/null 2>&1
  rm -rf "$work"
}
trap cleanup EXIT

started=$SECONDS
"${PYTEST[@]}" "${STACK_SUITES[@]}" --basetemp="$work/stack" "$@" >"$work/stack.out" 2>&1 &
stack_pid=$!
echo "make test: tests/e2e and tests/fault run beside the rest (pid $stack_pid); their report follows this one"

rest_ignores=()
for suite in "${STACK_SUITES[@]}"; do rest_ignores+=(--ignore="$suite"); done
"${PYTEST[@]}" "${rest_ignores[@]}" --basetemp="$work/rest" "$@"
rest_rc=$?

wait "$stack_pid"
stack_rc=$?
stack_pid=
echo
echo "===== tests/e2e and tests/fault ====="
cat "$work/stack.out"
echo
echo "make test: rest exit $rest_rc, e2e+fault exit $stack_rc, $((SECONDS - started)) s in all"
((rest_rc == 0 && stack_rc == 0))
