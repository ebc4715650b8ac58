#!/usr/bin/env bash
# The events relay's cost (issues 18 and 20): the same broker with the relay off, with all 13
# hooks relayed to the example analytics sidecar (SDK server, borrowed event views), the same at
# least once (acknowledged by the sidecar), and with the sidecar down, run back to back per scenario in every saturation scenario (fan-in, fan-out,
# pairwise; QoS 0 and 1), and at a fixed offered load. Reported per scenario: the two throughput ratios, the broker's CPU per
# message received, the sidecar's CPU per event (events counted from the broker's /metrics).
#
#   bench/relay.sh           release build, 10 s per scenario, 2 repeats; rewrites the relay
#                            section of BENCHMARKS.md
#   bench/relay.sh --smoke   debug build, 1 s per scenario, results in target/bench-smoke/
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh
bench_setup "$@" -- --bin vmq-broker --bin vmq-bench --example analytics_sidecar
if [ "$SMOKE" = 1 ]; then
  REPEATS=1; PAUSE=0; FANOUT=5; PAIRS=5; PACE="--rate 300"; PACED_FAN_IN=100; PACED_FAN_OUT=100
else
  REPEATS=${REPEATS:-2}; PAUSE=3; FANOUT=50; PAIRS=50; PACE=""
  PACED_FAN_IN=10000; PACED_FAN_OUT=2000
fi
RESULTS="$OUT/relay.jsonl"
: > "$RESULTS"

SIDECAR=$(free_port); ABSENT=$(free_port); HTTP=$(free_port); HTTP_ALO=$(free_port)
HOOKS='[on_register, on_register_failed, on_publish, on_subscribe, on_unsubscribe, on_deliver, on_delivery_complete, on_offline_message, on_message_drop, on_client_wakeup, on_client_offline, on_client_gone, on_session_expired]'
start sidecar "$OUT/relay-sidecar.log" \
  $BIN/examples/analytics_sidecar --listen 127.0.0.1:"$SIDECAR" --interval 3600
declare -A PORT
broker() { # name, extra config lines
  PORT[$1]=$(free_port)
  printf 'listener.tcp.default = 127.0.0.1:%s\nallow_anonymous = on\nlog.console.level = warning\nmessage_store = off\npersistent_data_dir = %s\n%s\n' \
    "${PORT[$1]}" "$OUT/data-relay-$1" "$2" > "$OUT/relay-$1.conf"
  start "$1" "$OUT/relay-$1.log" $BIN/vmq-broker --config "$OUT/relay-$1.conf"
}
broker off ""
broker all "plugins.vmq_events_sidecar = on
vmq_events_sidecar.port = $SIDECAR
vmq_events_sidecar.hooks = $HOOKS
listener.http.default = 127.0.0.1:$HTTP"
broker alo "plugins.vmq_events_sidecar = on
vmq_events_sidecar.port = $SIDECAR
vmq_events_sidecar.hooks = $HOOKS
vmq_events_sidecar.delivery = at_least_once
listener.http.default = 127.0.0.1:$HTTP_ALO"
broker down "plugins.vmq_events_sidecar = on
vmq_events_sidecar.port = $ABSENT
vmq_events_sidecar.hooks = $HOOKS"
for p in "$SIDECAR" "$HTTP" "$HTTP_ALO" "${PORT[@]}"; do wait_port "$p"; done

SCENARIOS=(
  "qos0-fan-in-8x1|--scenario fan-in --clients 8 --qos 0"
  "qos1-fan-in-8x1|--scenario fan-in --clients 8 --qos 1"
  "qos0-fan-out-1x$FANOUT|--scenario fan-out --clients $FANOUT --qos 0"
  "qos1-fan-out-1x$FANOUT|--scenario fan-out --clients $FANOUT --qos 1"
  "qos0-pairwise-$PAIRS|--scenario pairwise --clients $PAIRS --qos 0"
  "qos1-pairwise-$PAIRS|--scenario pairwise --clients $PAIRS --qos 1"
  # The same offered load for the three brokers (below saturation): CPU per message without
  # the throughput differences that change how well everything else batches.
  "qos0-fan-in-8x1-paced-80k|--scenario fan-in --clients 8 --qos 0 --rate $PACED_FAN_IN"
  "qos1-fan-out-1x$FANOUT-paced-100k|--scenario fan-out --clients $FANOUT --qos 1 --rate $PACED_FAN_OUT"
)
for _ in $(seq "$REPEATS"); do
  for s in "${SCENARIOS[@]}"; do
    label=${s%%|*}; args=${s#*|}
    for b in off all alo down; do
      extra=(--cpu-pid "${PID[$b]}")
      [ "$b" = all ] && extra+=(--cpu-pid "${PID[sidecar]}" --events-metrics 127.0.0.1:"$HTTP")
      [ "$b" = alo ] && extra+=(--cpu-pid "${PID[sidecar]}" --events-metrics 127.0.0.1:"$HTTP_ALO")
      # shellcheck disable=SC2086
      pace=$PACE; [[ $label == *paced* ]] && pace=""
      line=$($BIN/vmq-bench --json pubsub --port "${PORT[$b]}" --duration "$DURATION" $args \
        --payload 64 $pace "${extra[@]}")
      record "$RESULTS" "$label" "$b" "$line"
      sleep "$PAUSE"
    done
  done
done

python3 - "$RESULTS" "$SMOKE" "$DURATION" "$OUT" "$REPEATS" <<'PY'
import sys
sys.path.insert(0, "bench")
from results import Results, med, q
res = Results(sys.argv)
duration, labels, runs = res.duration, res.labels, res.runs
def recv(label, broker):
    return med([float(r["received_per_s"]) for r in runs(label, broker)])
def cpu_us(label, broker, i=0, per="msg"):
    v = []
    for r in runs(label, broker):
        n = float(r["events"]) if per == "event" else float(r["received_per_s"]) * duration
        if n > 0 and len(r["cpu_ms"]) > i:
            v.append(r["cpu_ms"][i] * 1000 / n)
    return med(v)
def events_per_msg(label):
    return med([float(r["events"]) / (float(r["received_per_s"]) * duration)
                for r in runs(label, "all") if float(r["received_per_s"]) > 0])
lines = ["| scenario | relay off msg/s | all hooks msg/s | ratio | sidecar down msg/s | ratio "
         "| broker CPU µs/msg off / all / down | CPU all / off | CPU down / off "
         "| events/msg | sidecar CPU µs/event |",
         "|---|---|---|---|---|---|---|---|---|---|---|"]
for l in labels:
    o, a, d = recv(l, "off"), recv(l, "all"), recv(l, "down")
    co, ca, cd = cpu_us(l, "off"), cpu_us(l, "all"), cpu_us(l, "down")
    lines.append(f"| {l} | {o:,.0f} | {a:,.0f} | **{q(a, o):.2f}** | {d:,.0f} | **{q(d, o):.2f}** "
                 f"| {co:.2f} / {ca:.2f} / {cd:.2f} | **{q(ca, co):.2f}** | **{q(cd, co):.2f}** "
                 f"| {events_per_msg(l):.2f} | **{cpu_us(l, 'all', 1, 'event'):.2f}** |")
alo_labels = [l for l in labels if runs(l, "alo")]
if alo_labels:
    lines += ["", "At least once (`vmq_events_sidecar.delivery = at_least_once`, the same sidecar "
              "acknowledging every event), against at most once (the all-hooks broker above), same run:", "",
              "| scenario | at most once msg/s | at least once msg/s | ratio | broker CPU µs/msg at most / at least once | CPU ratio | events/msg | sidecar CPU µs/event |",
              "|---|---|---|---|---|---|---|---|"]
for l in alo_labels:
    a, k = recv(l, "all"), recv(l, "alo")
    ca, ck = cpu_us(l, "all"), cpu_us(l, "alo")
    ev = med([float(r["events"]) / (float(r["received_per_s"]) * duration)
              for r in runs(l, "alo") if float(r["received_per_s"]) > 0])
    lines.append(f"| {l} | {a:,.0f} | {k:,.0f} | **{q(k, a):.2f}** | {ca:.2f} / {ck:.2f} | **{q(ck, ca):.2f}** "
                 f"| {ev:.2f} | {cpu_us(l, 'alo', 1, 'event'):.2f} |")
res.publish("relay", "bench/relay.sh", "relay",
            "The relay's cost: broker CPU per message, sidecar CPU per event (issue 18)",
            "\n".join(lines))
PY
