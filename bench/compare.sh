#!/usr/bin/env bash
# Two builds of vmq-broker side by side, in alternation, in one run: did a change cost
# throughput? Also the SUBSCRIBE storm: publish throughput on one mountpoint while a client on
# another mountpoint sends 1,000 SUBSCRIBE + 1,000 UNSUBSCRIBE packets per second.
#
#   bench/compare.sh <baseline vmq-broker binary> [<new vmq-broker binary>]
#
# The new binary defaults to this tree's release build. Prints one line per scenario and
# broker, then a table of new/baseline ratios. Build a baseline from another commit with
#   git worktree add /tmp/base <commit> && (cd /tmp/base && cargo build --release --bin vmq-broker)
set -euo pipefail
cd "$(dirname "$0")/.."

BASE=${1:?usage: bench/compare.sh <baseline vmq-broker> [<new vmq-broker>]}
cargo build --release --jobs 2 --bin vmq-broker --bin vmq-bench
NEW=${2:-target/release/vmq-broker}
BENCH=target/release/vmq-bench
DURATION=${DURATION:-8}
OUT=target/compare
mkdir -p "$OUT"
RESULTS="$OUT/results.jsonl"
: > "$RESULTS"

PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened" >&2; exit 1; }

start() { # name binary -> sets PORT_<name>, STORM_<name>, PID_<name>
  local name=$1 bin=$2 port storm
  port=$(free_port); storm=$(free_port)
  printf 'listener.tcp.default = 127.0.0.1:%s\nlistener.tcp.storm = 127.0.0.1:%s\nlistener.tcp.storm.mountpoint = storm\nallow_anonymous = on\nlog.console.level = warning\nmessage_store = off\n' \
    "$port" "$storm" > "$OUT/$name.conf"
  "$bin" --config "$OUT/$name.conf" 2> "$OUT/$name.log" & PIDS+=($!)
  eval "PORT_$name=$port STORM_$name=$storm PID_$name=$!"
  wait_port "$port"
}
start base "$BASE"
start new "$NEW"

bench() { # label broker port args...
  local label=$1 broker=$2 port=$3; shift 3
  local line
  line=$($BENCH --json pubsub --port "$port" --duration "$DURATION" "$@" 2>/dev/null)
  echo "{\"label\":\"$label\",\"broker\":\"$broker\",${line#\{}" >> "$RESULTS"
  echo "$label $broker: $line"
}

SCENARIOS=(
  "qos0-fan-in-8x1|--scenario fan-in --clients 8 --qos 0 --payload 64"
  "qos1-fan-in-8x1|--scenario fan-in --clients 8 --qos 1 --payload 64"
  "qos0-fan-out-1x100|--scenario fan-out --clients 100 --qos 0 --payload 64"
  "qos1-fan-out-1x100|--scenario fan-out --clients 100 --qos 1 --payload 64"
  "qos0-pairwise-50|--scenario pairwise --clients 50 --qos 0 --payload 64"
  "qos1-pairwise-50|--scenario pairwise --clients 50 --qos 1 --payload 64"
)
for s in "${SCENARIOS[@]}"; do
  label=${s%%|*}; args=${s#*|}
  # shellcheck disable=SC2086
  bench "$label" base "$PORT_base" $args --cpu-pid "$PID_base"
  # shellcheck disable=SC2086
  bench "$label" new "$PORT_new" $args --cpu-pid "$PID_new"
done
# The storm: the same fan-in without, then with, 1,000 SUBSCRIBEs/s on the other mountpoint.
for b in base new; do
  port_var=PORT_$b; storm_var=STORM_$b
  bench "qos0-fan-in-8x1-quiet" "$b" "${!port_var}" --scenario fan-in --clients 8 --qos 0 --payload 64
  bench "qos0-fan-in-8x1-storm" "$b" "${!port_var}" --scenario fan-in --clients 8 --qos 0 --payload 64 \
    --storm-port "${!storm_var}" --storm-rate 1000
done

python3 - "$RESULTS" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
by = {}
for r in rows:
    by.setdefault(r["label"], {})[r["broker"]] = r
print()
print(f"{'scenario':32} {'base recv/s':>12} {'new recv/s':>12} {'new/base':>9}")
for label, b in by.items():
    if "base" in b and "new" in b:
        x, y = b["base"]["received_per_s"], b["new"]["received_per_s"]
        print(f"{label:32} {x:12.0f} {y:12.0f} {y / x if x else 0:9.2f}")
for b in ("base", "new"):
    q = by.get("qos0-fan-in-8x1-quiet", {}).get(b)
    s = by.get("qos0-fan-in-8x1-storm", {}).get(b)
    if q and s:
        print(f"storm/quiet fan-in throughput, {b}: {s['received_per_s'] / q['received_per_s']:.2f}")
PY
