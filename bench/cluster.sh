#!/usr/bin/env bash
# The cost of clustering, same run, same machine: publishers on node n1 and subscribers on node
# n2 of a three-node cluster (127.0.0.1/2/3, joined with vmq-admin) against the same load on a
# single node; the cost of a CONNECT on a cluster node (its client id claimed from the other
# nodes) against a single node; a reconnect storm of 2,000 clients. Three brokers share this
# machine's cores. Writes the table between the `cluster` markers of BENCHMARKS.md.
#
#   bench/cluster.sh [--smoke]      (DURATION=seconds, REPEATS=n)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh
bench_setup "$@" -- --bin vmq-broker --bin vmq-bench --bin vmq-admin
if [ "$SMOKE" = 1 ]; then
  REPEATS=1; PAUSE=0; PAIRS=5; STORM=100
else
  REPEATS=${REPEATS:-2}; PAUSE=2; PAIRS=20; STORM=2000
fi
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
RESULTS="$OUT/cluster.jsonl"
: > "$RESULTS"
rm -rf "$OUT"/cluster-data-*

CLUSTER_PORT=$(free_port)
declare -A MQTT HTTP
node() { # name, ip, extra config lines
  MQTT[$1]=$(free_port); HTTP[$1]=$(free_port)
  printf 'nodename = %s@%s\nlistener.tcp.default = %s:%s\nlistener.http.default = %s:%s\nallow_anonymous = on\nlog.console.level = warning\nmessage_store = off\nmax_online_messages = 100000\npersistent_data_dir = %s\n%s\n' \
    "$1" "$2" "$2" "${MQTT[$1]}" "$2" "${HTTP[$1]}" "$OUT/cluster-data-$1" "$3" > "$OUT/cluster-$1.conf"
  start "$1" "$OUT/cluster-$1.log" $BIN/vmq-broker --config "$OUT/cluster-$1.conf"
}
node single 127.0.0.1 ""
for i in 1 2 3; do node "n$i" "127.0.0.$i" "listener.vmq.clustering = 127.0.0.$i:$CLUSTER_PORT"; done
sleep 1
for n in n2 n3; do
  $BIN/vmq-admin --config "$OUT/cluster-$n.conf" --url "http://127.0.0.${n#n}:${HTTP[$n]}" \
    cluster join discovery-node=n1@127.0.0.1
done
$BIN/vmq-admin --config "$OUT/cluster-n1.conf" --url "http://127.0.0.1:${HTTP[n1]}" cluster show

SCENARIOS=(
  "qos0-pairwise-$PAIRS|--scenario pairwise --clients $PAIRS --qos 0"
  "qos1-pairwise-$PAIRS|--scenario pairwise --clients $PAIRS --qos 1"
  "qos0-fan-in-8x1|--scenario fan-in --clients 8 --qos 0"
)
for _ in $(seq "$REPEATS"); do
  for s in "${SCENARIOS[@]}"; do
    label=${s%%|*}; args=${s#*|}
    line=$($BIN/vmq-bench --json pubsub --port "${MQTT[single]}" --duration "$DURATION" $args \
      --payload 64 --cpu-pid "${PID[single]}")
    record "$RESULTS" "$label" single "$line"
    sleep "$PAUSE"
    line=$($BIN/vmq-bench --json pubsub --host 127.0.0.1 --port "${MQTT[n1]}" \
      --sub-host 127.0.0.2 --sub-port "${MQTT[n2]}" --settle 1 --duration "$DURATION" $args \
      --payload 64 --cpu-pid "${PID[n1]}" --cpu-pid "${PID[n2]}" --cpu-pid "${PID[n3]}")
    record "$RESULTS" "$label" cluster "$line"
    sleep "$PAUSE"
  done
  for c in "connect-8|8" "reconnect-storm-$STORM|$STORM"; do
    label=${c%%|*}; clients=${c#*|}
    line=$($BIN/vmq-bench --json connect --port "${MQTT[single]}" --clients "$clients" --duration "$DURATION")
    record "$RESULTS" "$label" single "$line"
    sleep "$PAUSE"
    line=$($BIN/vmq-bench --json connect --host 127.0.0.1 --port "${MQTT[n1]}" --clients "$clients" --duration "$DURATION")
    record "$RESULTS" "$label" cluster "$line"
    sleep "$PAUSE"
  done
done

python3 - "$RESULTS" "$SMOKE" "$DURATION" "$OUT" "$REPEATS" <<'PY'
import sys
sys.path.insert(0, "bench")
from results import Results, med, q
res = Results(sys.argv)
duration, labels, runs = res.duration, res.labels, res.runs
lines = ["| scenario | single node | n1 -> n2 | ratio | broker CPU µs/msg single / cluster (n1+n2+n3) | p50 latency µs single / cluster | loss single / cluster |",
         "|---|---|---|---|---|---|---|"]
for l in labels:
    s, c = runs(l, "single"), runs(l, "cluster")
    if s and "received_per_s" in s[0]:
        rs, rc = med([float(r["received_per_s"]) for r in s]), med([float(r["received_per_s"]) for r in c])
        cpu = lambda rr: med([sum(r["cpu_ms"]) * 1000 / (float(r["received_per_s"]) * duration)
                              for r in rr if float(r["received_per_s"]) > 0])
        loss = lambda rr: max(float(r["loss"]) for r in rr) * 100 if rr else 0.0
        p50 = lambda rr: med([float(r["p50_us"]) for r in rr])
        lines.append(f"| {l} | {rs:,.0f} msg/s | {rc:,.0f} msg/s | **{q(rc, rs):.2f}** "
                     f"| {cpu(s):.2f} / {cpu(c):.2f} | {p50(s):.0f} / {p50(c):.0f} "
                     f"| {loss(s):.2f} % / {loss(c):.2f} % |")
    else:
        rs, rc = med([float(r["connects_per_s"]) for r in s]), med([float(r["connects_per_s"]) for r in c])
        lines.append(f"| {l} | {rs:,.0f} CONNECT/s | {rc:,.0f} CONNECT/s (on n1) | **{q(rc, rs):.2f}** | | | |")
res.publish("cluster", "bench/cluster.sh", "cluster", "A cluster against a single node (issue 21)",
            "\n".join(lines))
PY
