#!/usr/bin/env bash
# Side-by-side benchmark: mosquitto and vmq-broker on loopback, the same scenarios against each
# in alternation, then a table of ratios (ours / mosquitto) in BENCHMARKS.md.
#
#   bench/run.sh            full run (release build, 10 s per scenario), rewrites BENCHMARKS.md
#   bench/run.sh --smoke    CI: debug build, 1 s per scenario, results in target/bench-smoke/
#   bench/run.sh --idle     idle connections and SDK ingest again, keeping the throughput
#                           scenarios of the last full run, and the report rewritten
#
# Needs mosquitto and nats-server (Debian packages); installs them when missing. nats-server
# is the second peer: Go, multi-threaded, MQTT 3.1.1 through its JetStream-backed MQTT listener
# (QoS 0 and 1, which is all the scenarios use). rumqttd is the third: Rust, tokio, a router
# batching through commit logs; built from crates.io into target/peers the first time (about two
# minutes); if it does not build, its columns say n/a.
set -euo pipefail
cd "$(dirname "$0")/.."

SMOKE=0; IDLE_ONLY=0
[ "${1:-}" = "--smoke" ] && SMOKE=1
[ "${1:-}" = "--idle" ] && IDLE_ONLY=1
if [ "$SMOKE" = 1 ]; then
  # Unoptimized binaries, few clients, paced publishers: it checks that everything runs.
  PROFILE=debug; DURATION=${DURATION:-1}; OUT=target/bench-smoke; IDLE="${IDLE:-200 500}"
  FANOUT=10; PAIRS=5; PACE="--rate 500"; LATENCY_RATE=1000; FIXED_RATE=500; EVERYDAY_RATE=125
  cargo build --jobs 2 --bin vmq-broker --bin vmq-bench 
else
  PROFILE=release; DURATION=${DURATION:-10}; OUT=target/bench; IDLE="${IDLE:-5000 50000}"
  FANOUT=100; PAIRS=50; PACE=""; FIXED_RATE=20000; EVERYDAY_RATE=1250
  cargo build --release --jobs 2 --bin vmq-broker --bin vmq-bench 
fi
BIN=target/$PROFILE
mkdir -p "$OUT"
RESULTS="$OUT/results.jsonl"
if [ "$IDLE_ONLY" = 1 ]; then
  [ -s "$RESULTS" ] || { echo "--idle needs the results of a full run in $RESULTS" >&2; exit 1; }
  grep -v '"label":"idle-\|"label":"sdk-ingest"' "$RESULTS" > "$RESULTS.kept" || true
  mv "$RESULTS.kept" "$RESULTS"
else
  : > "$RESULTS"
fi

if ! command -v mosquitto >/dev/null || ! command -v nats-server >/dev/null; then
  if [ "$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq mosquitto nats-server
fi

# rumqttd's published lock file pins a `metrics` release that no longer compiles on current
# rustc, hence no --locked.
RUMQTTD=target/peers/bin/rumqttd
if [ ! -x "$RUMQTTD" ]; then
  cargo install rumqttd --version 0.20.0 --root target/peers --jobs 2 > "$OUT/rumqttd-install.log" 2>&1 \
    || echo "rumqttd did not build (see $OUT/rumqttd-install.log): its columns say n/a" >&2
fi

# 50,000 idle connections need as many descriptors in the brokers (they inherit this limit).
# Where the hard limit is lower, the idle counts are capped to what it allows.
ulimit -n 200000 2>/dev/null || ulimit -n "$(ulimit -Hn)"
FD_ROOM=$(( $(ulimit -n) - 1000 ))

PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened" >&2; exit 1; }

MOSQ_PORT=$(free_port); OURS_PORT=$(free_port)
RELAXED_PORT=$(free_port); MEMORY_PORT=$(free_port); NATS_PORT=$(free_port); NATS_CLIENT_PORT=$(free_port)
RUMQTTD_PORT=$(free_port)

cat > "$OUT/mosquitto.conf" <<CONF
listener $MOSQ_PORT 127.0.0.1
allow_anonymous true
max_queued_messages 1000
max_inflight_messages 20
CONF
mosquitto -c "$OUT/mosquitto.conf" > "$OUT/mosquitto.log" 2>&1 & PIDS+=($!); MOSQ_PID=$!

rm -rf "$OUT/nats-js"
cat > "$OUT/nats.conf" <<CONF
server_name: bench
listen: 127.0.0.1:$NATS_CLIENT_PORT
jetstream { store_dir: "$OUT/nats-js" }
mqtt { listen: 127.0.0.1:$NATS_PORT }
CONF
nats-server -c "$OUT/nats.conf" > "$OUT/nats.log" 2>&1 & PIDS+=($!); NATS_PID=$!

# rumqttd's own example config allows 100 unacknowledged QoS 1 messages per connection; ours
# and mosquitto's default (and VerneMQ's, max_inflight_messages) is 20: all three run at 20.
rumqttd_conf() { # port
  cat <<CONF
id = 0
[router]
id = 0
max_connections = 60010
max_outgoing_packet_count = 200
max_segment_size = 104857600
max_segment_count = 10
[v4.1]
name = "v4-1"
listen = "127.0.0.1:$1"
next_connection_delay_ms = 0
[v4.1.connections]
connection_timeout_ms = 60000
max_payload_size = 20480
max_inflight_count = 20
dynamic_filters = true
CONF
}
RUMQTTD_PID=""
if [ -x "$RUMQTTD" ]; then
  rumqttd_conf "$RUMQTTD_PORT" > "$OUT/rumqttd.toml"
  "$RUMQTTD" -q -c "$OUT/rumqttd.toml" > "$OUT/rumqttd.log" 2>&1 & PIDS+=($!); RUMQTTD_PID=$!
fi

ours_conf() { # port, extra lines
  printf 'listener.tcp.default = 127.0.0.1:%s\nallow_anonymous = on\nlog.console.level = warning\npersistent_data_dir = %s\n%s\n' "$1" "$OUT/data-$1" "$2"
}
ours_conf "$OURS_PORT" "" > "$OUT/ours.conf"

# The message store (on, durable, in the default config) only works for persistent sessions:
# the same broker with relaxed acknowledgements and with the store off, for the store scenarios.
ours_conf "$RELAXED_PORT" "message_store.durability = relaxed" > "$OUT/store-relaxed.conf"
ours_conf "$MEMORY_PORT" "message_store = off" > "$OUT/store-off.conf"

$BIN/vmq-broker --config "$OUT/ours.conf" 2> "$OUT/ours.log" & PIDS+=($!); OURS_PID=$!
$BIN/vmq-broker --config "$OUT/store-relaxed.conf" 2> "$OUT/store-relaxed.log" & PIDS+=($!); RELAXED_PID=$!
$BIN/vmq-broker --config "$OUT/store-off.conf" 2> "$OUT/store-off.log" & PIDS+=($!); MEMORY_PID=$!
for p in $MOSQ_PORT $NATS_PORT $OURS_PORT $RELAXED_PORT $MEMORY_PORT ${RUMQTTD_PID:+$RUMQTTD_PORT}; do wait_port "$p"; done

bench() { # label broker port pid args...: one scenario against one broker, its CPU time measured
  local label=$1 broker=$2 port=$3 pid=$4; shift 4
  local line
  line=$($BIN/vmq-bench --json pubsub --port "$port" --duration "$DURATION" --cpu-pid "$pid" "$@")
  echo "{\"label\":\"$label\",\"broker\":\"$broker\",${line#\{}" >> "$RESULTS"
  echo "$label $broker: $line"
}

SCENARIOS=(
  "qos0-fan-in-8x1|--scenario fan-in --clients 8 --qos 0 --payload 64 $PACE"
  "qos1-fan-in-8x1|--scenario fan-in --clients 8 --qos 1 --payload 64 $PACE"
  "qos0-fan-in-8x1-paced|--scenario fan-in --clients 8 --qos 0 --payload 64 --rate $FIXED_RATE"
  "qos0-fan-out-1x$FANOUT|--scenario fan-out --clients $FANOUT --qos 0 --payload 64 $PACE"
  "qos1-fan-out-1x$FANOUT|--scenario fan-out --clients $FANOUT --qos 1 --payload 64 $PACE"
  "qos0-pairwise-$PAIRS|--scenario pairwise --clients $PAIRS --qos 0 --payload 64 $PACE"
  "qos1-pairwise-$PAIRS|--scenario pairwise --clients $PAIRS --qos 1 --payload 64 $PACE"
  "latency-10k-qos0|--scenario latency --clients 1 --rate ${LATENCY_RATE:-10000} --qos 0 --payload 64"
  # Everyday load: 10 k msg/s in all from 8 publishers, where CPU per message and latency matter.
  "everyday-10k-qos0-fan-in-8x1|--scenario fan-in --clients 8 --qos 0 --payload 64 --rate $EVERYDAY_RATE"
  "everyday-10k-qos1-fan-in-8x1|--scenario fan-in --clients 8 --qos 1 --payload 64 --rate $EVERYDAY_RATE"
)
[ "$IDLE_ONLY" = 1 ] && SCENARIOS=()
for s in "${SCENARIOS[@]}"; do
  label=${s%%|*}; args=${s#*|}
  # shellcheck disable=SC2086
  bench "$label" mosquitto "$MOSQ_PORT" "$MOSQ_PID" $args
  # shellcheck disable=SC2086
  bench "$label" ours "$OURS_PORT" "$OURS_PID" $args
  # shellcheck disable=SC2086
  bench "$label" nats "$NATS_PORT" "$NATS_PID" $args
  if [ -n "$RUMQTTD_PID" ]; then
    # shellcheck disable=SC2086
    bench "$label" rumqttd "$RUMQTTD_PORT" "$RUMQTTD_PID" $args
  fi
done
# The relay's cost is measured by bench/relay.sh.

# Persistent subscribers: every QoS 1 message is written to the store and removed at PUBACK.
# mosquitto keeps them in memory (its persistence is off by default).
STORE_SCENARIOS=(
  "qos1-pairwise-$PAIRS-persistent|--scenario pairwise --clients $PAIRS --qos 1 --payload 64 --persistent $PACE"
  "qos1-fan-in-8x1-persistent|--scenario fan-in --clients 8 --qos 1 --payload 64 --persistent $PACE"
)
[ "$IDLE_ONLY" = 1 ] && STORE_SCENARIOS=()
for s in "${STORE_SCENARIOS[@]}"; do
  label=${s%%|*}; args=${s#*|}
  # shellcheck disable=SC2086
  bench "$label" mosquitto "$MOSQ_PORT" "$MOSQ_PID" $args
  # shellcheck disable=SC2086
  bench "$label" ours "$OURS_PORT" "$OURS_PID" $args
  # shellcheck disable=SC2086
  bench "$label" nats "$NATS_PORT" "$NATS_PID" $args
  # shellcheck disable=SC2086
  bench "$label" ours-store-relaxed "$RELAXED_PORT" "$RELAXED_PID" $args
  # shellcheck disable=SC2086
  bench "$label" ours-store-off "$MEMORY_PORT" "$MEMORY_PID" $args
done

# Idle connections, each count on a broker started for it (what a fresh broker costs per
# connection, not what the heap kept from the scenarios above). nats and rumqttd, at 24 and 45 KB
# a connection, only at the smallest count.
idle() { # broker count command...
  local broker=$1 count=$2 port pid line; shift 2
  if [ "$count" -gt "$FD_ROOM" ]; then
    echo "idle $broker: $count connections capped to $FD_ROOM (the fd limit is $(ulimit -n))" >&2
    count=$FD_ROOM
  fi
  port=$(free_port)
  case $broker in
    mosquitto) printf 'listener %s 127.0.0.1\nallow_anonymous true\n' "$port" > "$OUT/idle.conf"
               mosquitto -c "$OUT/idle.conf" > /dev/null 2>&1 & pid=$! ;;
    ours) ours_conf "$port" "message_store = off" > "$OUT/idle.conf"
          $BIN/vmq-broker --config "$OUT/idle.conf" 2> "$OUT/idle-ours.log" & pid=$! ;;
    nats) printf 'server_name: idle\nlisten: 127.0.0.1:%s\nmqtt { listen: 127.0.0.1:%s }\njetstream { store_dir: "%s" }\n' \
            "$(free_port)" "$port" "$OUT/idle-nats-js" > "$OUT/idle-nats.conf"
          nats-server -c "$OUT/idle-nats.conf" > /dev/null 2>&1 & pid=$! ;;
    rumqttd) rumqttd_conf "$port" > "$OUT/idle-rumqttd.toml"
             "$RUMQTTD" -q -c "$OUT/idle-rumqttd.toml" > /dev/null 2>&1 & pid=$! ;;
  esac
  PIDS+=("$pid")
  wait_port "$port"; sleep 0.5
  line=$($BIN/vmq-bench --json idle --port "$port" --broker-pid "$pid" --connections "$count")
  echo "{\"label\":\"idle-$count\",\"broker\":\"$broker\",${line#\{}" >> "$RESULTS"
  echo "idle $broker $count: $line"
  kill "$pid"; wait "$pid" 2>/dev/null || true
}
for count in $IDLE; do
  idle mosquitto "$count"
  idle ours "$count"
done
first_idle=${IDLE%% *}
idle nats "$first_idle"
[ -z "$RUMQTTD_PID" ] || idle rumqttd "$first_idle"

line=$($BIN/vmq-bench --json sdk-ingest --connections 4 --duration "$DURATION")
echo "{\"label\":\"sdk-ingest\",\"broker\":\"sdk\",${line#\{}" >> "$RESULTS"
echo "sdk ingest: $line"

python3 bench/report.py "$RESULTS" "$OUT" "$SMOKE" "$DURATION"
