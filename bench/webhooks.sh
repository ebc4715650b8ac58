#!/usr/bin/env bash
# The cost of webhooks: publish throughput with an auth_on_publish webhook on a local endpoint,
# (a) every call reaching the endpoint and (b) answered from the cache, against the same broker
# without webhooks; and the CONNECT rate with an auth_on_register webhook. Brokers run in
# alternation, in the same run, on loopback.
#
#   bench/webhooks.sh           release build, 10 s per scenario, rewrites the webhooks section
#                               of BENCHMARKS.md
#   bench/webhooks.sh --smoke   debug build, 1 s per scenario, results in target/bench-smoke/
set -euo pipefail
cd "$(dirname "$0")/.."

. bench/common.sh
bench_setup "$@" -- --bin vmq-broker --bin vmq-bench --example webhook_endpoint
if [ "$SMOKE" = 1 ]; then REPEATS=1; PAUSE=0; else REPEATS=${REPEATS:-2}; PAUSE=5; fi
RESULTS="$OUT/webhooks.jsonl"
: > "$RESULTS"


EP=$(free_port); EPC=$(free_port)
$BIN/examples/webhook_endpoint --listen 127.0.0.1:"$EP" 2> "$OUT/endpoint.log" & PIDS+=($!); EP_PID=$!
$BIN/examples/webhook_endpoint --listen 127.0.0.1:"$EPC" --max-age 3600 2> "$OUT/endpoint-cached.log" & PIDS+=($!)

declare -A PORT
broker() { # name, extra lines
  local port; port=$(free_port)
  printf 'listener.tcp.default = 127.0.0.1:%s\nlog.console.level = warning\nplugins.vmq_passwd = off\nplugins.vmq_acl = off\nplugins.vmq_webhooks = on\npersistent_data_dir = %s\n%s\n' \
    "$port" "$OUT/data-wh-$1" "$2" > "$OUT/wh-$1.conf"
  $BIN/vmq-broker --config "$OUT/wh-$1.conf" 2> "$OUT/wh-$1.log" & PIDS+=($!)
  PID[$1]=$!; PORT[$1]=$port
}
broker none "allow_anonymous = on"
broker publish "allow_anonymous = on
vmq_webhooks.p.hook = auth_on_publish
vmq_webhooks.p.endpoint = http://127.0.0.1:$EP/vmq"
broker publish-cached "allow_anonymous = on
vmq_webhooks.p.hook = auth_on_publish
vmq_webhooks.p.endpoint = http://127.0.0.1:$EPC/vmq"
broker register "allow_anonymous = off
vmq_webhooks.r.hook = auth_on_register
vmq_webhooks.r.endpoint = http://127.0.0.1:$EP/vmq"
broker register-cached "allow_anonymous = off
vmq_webhooks.r.hook = auth_on_register
vmq_webhooks.r.endpoint = http://127.0.0.1:$EPC/vmq"
for p in "$EP" "$EPC" "${PORT[@]}"; do wait_port "$p"; done

for _ in $(seq "$REPEATS"); do
  for s in "qos0-fan-in-8x1|--qos 0" "qos1-fan-in-8x1|--qos 1"; do
    label=${s%%|*}; qos=${s#*|}
    # The uncached broker last: it keeps reading the publishers' socket backlog after the
    # measurement, so each run is followed by a pause for the machine to be quiet again.
    for b in none publish-cached publish; do
      # shellcheck disable=SC2086
      line=$($BIN/vmq-bench --json pubsub --port "${PORT[$b]}" --duration "$DURATION" \
        --scenario fan-in --clients 8 $qos --payload 64 --cpu-pid "${PID[$b]}" --cpu-pid "$EP_PID")
      record "$RESULTS" "$label" "$b" "$line"
      sleep "$PAUSE"
    done
  done
  for b in none register register-cached; do
    line=$($BIN/vmq-bench --json connect --port "${PORT[$b]}" --duration "$DURATION" --clients 8 --username bench)
    record "$RESULTS" "connect-8" "$b" "$line"
    sleep "$PAUSE"
  done
done

python3 - "$RESULTS" "$SMOKE" "$DURATION" "$OUT" <<'PY'
import json, sys, statistics
from pathlib import Path
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
smoke, duration, out = sys.argv[2] == "1", sys.argv[3], Path(sys.argv[4])
def med(label, broker, key):
    v = [float(r[key]) for r in rows if r["label"] == label and r["broker"] == broker and key in r]
    return statistics.median(v) if v else 0.0
lines = ["| scenario | no webhook | webhook, every call | ratio | webhook, cached | ratio |",
         "|---|---|---|---|---|---|"]
for label in ["qos0-fan-in-8x1", "qos1-fan-in-8x1"]:
    base = med(label, "none", "received_per_s")
    a, c = med(label, "publish", "received_per_s"), med(label, "publish-cached", "received_per_s")
    lines.append(f"| {label} msg/s | {base:,.0f} | {a:,.0f} | {a/base if base else 0:.2f} | {c:,.0f} | {c/base if base else 0:.2f} |")
base = med("connect-8", "none", "connects_per_s")
a, c = med("connect-8", "register", "connects_per_s"), med("connect-8", "register-cached", "connects_per_s")
lines.append(f"| connect-8 CONNECT/s (auth_on_register) | {base:,.0f} | {a:,.0f} | {a/base if base else 0:.2f} | {c:,.0f} | {c/base if base else 0:.2f} |")
table = "\n".join(lines)
print(table)
(out / "webhooks.md").write_text(table + "\n")
if not smoke:
    bm = Path("BENCHMARKS.md")
    text = bm.read_text()
    begin, end = "<!-- webhooks:begin -->", "<!-- webhooks:end -->"
    section = f"{begin}\nMedians of the repeats, {duration} s each (`bench/webhooks.sh`):\n\n{table}\n{end}"
    if begin in text:
        text = text[: text.index(begin)] + section + text[text.index(end) + len(end):]
    else:
        text += f"\n## Webhooks: the cost of an auth webhook (issue 15)\n\n{section}\n"
    bm.write_text(text)
PY
