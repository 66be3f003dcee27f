#!/usr/bin/env bash
# `make demo`: a local broker, one worker, generated runs for a handful of agents, and their
# hints printed as they change; then the hints gateway (one per rendering profile) in front of
# a stand-in upstream, with a few requests through it and the hints each received. Everything
# is torn down at the end or on Ctrl-C.
#
# Knobs (environment): DEMO_RUNS (200), DEMO_AGENTS (5), DEMO_RATE runs/s (10),
# DEMO_BOOTSTRAP=host:port to use an already running broker instead of starting one.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PY:-.venv/bin/python}
RUNS=${DEMO_RUNS:-200}
AGENTS=${DEMO_AGENTS:-5}
RATE=${DEMO_RATE:-10}
WORK=$(mktemp -d -t agent-hints-demo.XXXXXX)
WORKER_PID=""
STARTED_BROKER=0
SIDE_PIDS=()  # the stand-in upstream and the gateways

say() { printf '\n== %s\n' "$*"; }

teardown() {
  trap - EXIT INT TERM
  say "tearing down"
  for pid in "${SIDE_PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${SIDE_PIDS[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  if [[ -n $WORKER_PID ]] && kill -0 "$WORKER_PID" 2>/dev/null; then
    kill -TERM "$WORKER_PID" 2>/dev/null || true
    for _ in $(seq 1 150); do kill -0 "$WORKER_PID" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$WORKER_PID" 2>/dev/null; then
      echo "worker did not stop within 15 s; killing it"
      kill -KILL "$WORKER_PID" 2>/dev/null || true
    fi
    wait "$WORKER_PID" 2>/dev/null || true
    echo "worker stopped"
  fi
  if ((STARTED_BROKER)); then
    ./scripts/kafka.sh down >/dev/null 2>&1 || echo "kafka.sh down failed" >&2
    echo "broker stopped"
  fi
  rm -rf "$WORK"
}
trap teardown EXIT
trap 'echo; echo "interrupted"; exit 130' INT TERM

fail() {
  echo "demo: $*" >&2
  if [[ -f $WORK/worker.log ]]; then
    echo "--- last lines of the worker log:" >&2
    tail -n 30 "$WORK/worker.log" >&2
  fi
  exit 1
}

free_port() {
  "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Poll a /readyz until it answers 200, the process (default: the worker) dies, or 90 s pass.
wait_ready() {
  local url=$1 pid=${2:-$WORKER_PID}
  for _ in $(seq 1 360); do
    kill -0 "$pid" 2>/dev/null || fail "process $pid exited during startup ($url)"
    if "$PY" -c 'import sys, urllib.request as u; u.urlopen(sys.argv[1], timeout=1)' "$url" \
      2>/dev/null; then
      return 0
    fi
    sleep 0.25
  done
  fail "not ready after 90 s ($url)"
}

if [[ -n ${DEMO_BOOTSTRAP:-} ]]; then
  BOOTSTRAP=$DEMO_BOOTSTRAP
  say "using the broker at $BOOTSTRAP"
else
  say "starting the local Kafka broker (first run downloads it)"
  ./scripts/kafka.sh install
  STARTED_BROKER=1
  up_output=$(./scripts/kafka.sh up | tee /dev/stderr)
  # a broker someone else started with `kafka.sh up` is reused, and left running
  if grep -q 'already running' <<<"$up_output"; then STARTED_BROKER=0; fi
  BOOTSTRAP=$(printf '%s\n' "$up_output" | sed -n 's/^KAFKA_BOOTSTRAP=//p' | tail -n 1)
  [[ -n $BOOTSTRAP ]] || fail "kafka.sh up did not print KAFKA_BOOTSTRAP=host:port"
fi
export WORKER_BOOTSTRAP_SERVERS=$BOOTSTRAP

say "creating topics"
"$PY" -m worker produce-demo --create-topics --count 0

METRICS_PORT=$(free_port)
say "starting the worker (metrics and /readyz on 127.0.0.1:$METRICS_PORT)"
"$PY" -m worker run \
  --bootstrap-servers "$BOOTSTRAP" \
  --group-id "agent-hints-demo-$$" \
  --state-dir "$WORK/state" \
  --metrics-port "$METRICS_PORT" \
  >"$WORK/worker.log" 2>&1 &
WORKER_PID=$!
wait_ready "http://127.0.0.1:$METRICS_PORT/readyz"
echo "worker ready (pid $WORKER_PID)"

say "streaming $RUNS runs for $AGENTS agents at $RATE runs/s; hints as they change:"
"$PY" -m worker produce-demo --count "$RUNS" --agents "$AGENTS" --rate "$RATE" --follow \
  || fail "not every run was reflected in the hints"

say "the trie behind agent-0000's hints (python -m worker inspect agent-0000)"
"$PY" -m worker inspect agent-0000

say "the hints gateway: an OpenAI-compatible proxy adding hints to LLM requests (docs/router.md)"
UPSTREAM_PORT=$(free_port)
"$PY" -m devtools.fake_upstream --port "$UPSTREAM_PORT" >"$WORK/upstream.log" 2>&1 &
SIDE_PIDS+=($!)
GATEWAYS=()
for profile in dynamo nemo-relay nat-headers; do
  port=$(free_port)
  "$PY" -m worker gateway --upstream "http://127.0.0.1:$UPSTREAM_PORT" --host 127.0.0.1 \
    --port "$port" --bootstrap-servers "$BOOTSTRAP" --profile "$profile" \
    >"$WORK/gateway-$profile.log" 2>&1 &
  SIDE_PIDS+=($!)
  GATEWAYS+=("--gateway" "$profile=http://127.0.0.1:$port")
  echo "gateway --profile $profile on 127.0.0.1:$port"
done
for ((i = 1; i < ${#SIDE_PIDS[@]}; i++)); do
  url=${GATEWAYS[$((2 * i - 1))]#*=}
  wait_ready "$url/readyz" "${SIDE_PIDS[$i]}"
done
echo "stand-in upstream on 127.0.0.1:$UPSTREAM_PORT answers with the hints it received:"
"$PY" -m devtools.gateway_demo --bootstrap-servers "$BOOTSTRAP" --agent agent-0000 "${GATEWAYS[@]}" \
  || fail "the gateway demo failed"
