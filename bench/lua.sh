#!/usr/bin/env bash
# The cost of Lua scripts: QoS 0 publish throughput with a Lua auth_on_publish that returns
# true, with 1 and with 4 Lua states, against the same broker without scripts; and the CONNECT
# rate with a Lua auth_on_register doing a bcrypt check. Brokers run in alternation, in the same
# run, on loopback.
#
#   bench/lua.sh           release build, 10 s per scenario, rewrites the Lua section of
#                          BENCHMARKS.md
#   bench/lua.sh --smoke   debug build, 1 s per scenario, results in target/bench-smoke/
set -euo pipefail
cd "$(dirname "$0")/.."

. bench/common.sh
bench_setup "$@" -- --bin vmq-broker --bin vmq-bench
if [ "$SMOKE" = 1 ]; then REPEATS=1; PAUSE=0; else REPEATS=${REPEATS:-2}; PAUSE=3; fi
RESULTS="$OUT/lua.jsonl"
: > "$RESULTS"


cat > "$OUT/allow.lua" <<'LUA'
function auth_on_publish(pub) return true end
hooks = {auth_on_publish = auth_on_publish}
LUA
# The hash of "secret" at bcrypt cost 12 (VerneMQ's default_log_rounds), made once at load.
cat > "$OUT/bcrypt.lua" <<'LUA'
num_states = 4
local stored = bcrypt.hashpw("secret", bcrypt.gen_salt())
function auth_on_register(reg)
  return reg.password ~= nil and bcrypt.hashpw(reg.password, stored) == stored
end
hooks = {auth_on_register = auth_on_register}
LUA

declare -A PORT
broker() { # name, extra lines
  local port; port=$(free_port)
  printf 'listener.tcp.default = 127.0.0.1:%s\nlog.console.level = warning\nplugins.vmq_passwd = off\nplugins.vmq_acl = off\nplugins.vmq_diversity = on\npersistent_data_dir = %s\n%s\n' \
    "$port" "$OUT/data-lua-$1" "$2" > "$OUT/lua-$1.conf"
  $BIN/vmq-broker --config "$OUT/lua-$1.conf" 2> "$OUT/lua-$1.log" & PIDS+=($!)
  PID[$1]=$!; PORT[$1]=$port
}
broker none "allow_anonymous = on"
broker states-1 "allow_anonymous = on
vmq_diversity.nr_lua_states = 1
vmq_diversity.allow.file = $OUT/allow.lua"
broker states-4 "allow_anonymous = on
vmq_diversity.nr_lua_states = 4
vmq_diversity.allow.file = $OUT/allow.lua"
broker bcrypt "allow_anonymous = off
vmq_diversity.auth.file = $OUT/bcrypt.lua"
for p in "${PORT[@]}"; do wait_port "$p"; done

for _ in $(seq "$REPEATS"); do
  for b in none states-1 states-4; do
    line=$($BIN/vmq-bench --json pubsub --port "${PORT[$b]}" --duration "$DURATION" \
      --scenario fan-in --clients 8 --qos 0 --payload 64 --cpu-pid "${PID[$b]}")
    record "$RESULTS" qos0-fan-in-8x1 "$b" "$line"
    sleep "$PAUSE"
  done
  for b in none bcrypt; do
    line=$($BIN/vmq-bench --json connect --port "${PORT[$b]}" --duration "$DURATION" --clients 8 --username bench)
    record "$RESULTS" connect-8 "$b" "$line"
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
base = med("qos0-fan-in-8x1", "none", "received_per_s")
one, four = med("qos0-fan-in-8x1", "states-1", "received_per_s"), med("qos0-fan-in-8x1", "states-4", "received_per_s")
cbase, cb = med("connect-8", "none", "connects_per_s"), med("connect-8", "bcrypt", "connects_per_s")
r = lambda a, b: f"{a/b:.2f}" if b else "-"
table = "\n".join([
    "| scenario | no script | Lua, 1 state | ratio | Lua, 4 states | ratio |",
    "|---|---|---|---|---|---|",
    f"| qos0-fan-in-8x1 msg/s (auth_on_publish returns true) | {base:,.0f} | {one:,.0f} | {r(one, base)} | {four:,.0f} | {r(four, base)} |",
    "",
    "| scenario | no script | Lua auth_on_register with bcrypt (cost 12), 4 states | ratio |",
    "|---|---|---|---|",
    f"| connect-8 CONNECT/s | {cbase:,.0f} | {cb:,.0f} | {r(cb, cbase)} |",
])
print(table)
(out / "lua.md").write_text(table + "\n")
if not smoke:
    bm = Path("BENCHMARKS.md")
    text = bm.read_text()
    begin, end = "<!-- lua:begin -->", "<!-- lua:end -->"
    section = f"{begin}\nMedians of the repeats, {duration} s each (`bench/lua.sh`):\n\n{table}\n{end}"
    if begin in text:
        text = text[: text.index(begin)] + section + text[text.index(end) + len(end):]
    else:
        text += f"\n## Lua scripts: the cost of a hook in Lua (issue 16)\n\n{section}\n"
    bm.write_text(text)
PY
