#!/usr/bin/env bash
# VerneMQ's bundled PostgreSQL auth (vmq_diversity.auth_postgres) under load: the CONNECT rate
# with the password checked by PostgreSQL (crypt with a bcrypt hash of cost 12, VerneMQ's
# default work factor), and the QoS 0 publish throughput of authenticated clients, whose
# publishes are decided by auth_cache (no query per message), against the same broker with auth
# off, in the same run. PostgreSQL runs from a temp dir on a free port, started here.
#
#   bench/lua_db.sh           release build, 10 s per scenario, rewrites the database section
#                             of BENCHMARKS.md
#   bench/lua_db.sh --smoke   debug build, 1 s per scenario, results in target/bench-smoke/
set -euo pipefail
cd "$(dirname "$0")/.."

SMOKE=0
[ "${1:-}" = "--smoke" ] && SMOKE=1
if [ "$SMOKE" = 1 ]; then
  PROFILE=debug; DURATION=${DURATION:-1}; OUT=target/bench-smoke; REPEATS=1; PAUSE=0; COST=4
  cargo build --jobs 2 --bin vmq-broker --bin vmq-bench
else
  PROFILE=release; DURATION=${DURATION:-10}; OUT=target/bench; REPEATS=${REPEATS:-3}; PAUSE=3; COST=12
  cargo build --release --jobs 2 --bin vmq-broker --bin vmq-bench
fi
BIN=$PWD/target/$PROFILE
mkdir -p "$OUT"
RESULTS="$OUT/lua_db.jsonl"
: > "$RESULTS"

PIDS=()
PG_DIR=$(mktemp -d /tmp/vmq-bench-pg-XXXXXX)
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$PG_DIR"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 300); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened" >&2; exit 1; }

# PostgreSQL, as the postgres user when this runs as root (it refuses to run as root).
PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
as_pg=()
if [ "$(id -u)" -eq 0 ]; then
  chown postgres "$PG_DIR"
  as_pg=(setpriv --reuid=postgres --regid=postgres --init-groups)
fi
PG_PORT=$(free_port)
echo bench > "$PG_DIR/pw"
"${as_pg[@]}" "$PG_BIN/initdb" -D "$PG_DIR/data" -U vmq --auth=scram-sha-256 --pwfile="$PG_DIR/pw" --no-sync > "$PG_DIR/initdb.log"
"${as_pg[@]}" "$PG_BIN/postgres" -D "$PG_DIR/data" -h 127.0.0.1 -p "$PG_PORT" -k "$PG_DIR" -c fsync=off > "$PG_DIR/pg.log" 2>&1 &
PIDS+=($!)
wait_port "$PG_PORT"
psql() { PGPASSWORD=bench "$PG_BIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U vmq -X -q -v ON_ERROR_STOP=1 "$@"; }
for _ in $(seq 50); do psql -d postgres -c 'SELECT 1' >/dev/null 2>&1 && break; sleep 0.1; done
psql -d postgres -c 'CREATE DATABASE vernemq_db'
psql -d vernemq_db <<SQL
CREATE EXTENSION pgcrypto;
CREATE TABLE vmq_auth_acl (mountpoint varchar(10) NOT NULL, client_id varchar(128) NOT NULL,
  username varchar(128) NOT NULL, password varchar(128), publish_acl json, subscribe_acl json,
  PRIMARY KEY (mountpoint, client_id, username));
INSERT INTO vmq_auth_acl VALUES ('', '*', 'bench', crypt('secret', gen_salt('bf', $COST)),
  '[{"pattern": "users/%u/#"}, {"pattern": "devices/%c/out/+"}, {"pattern": "bench/#"}]',
  '[{"pattern": "users/%u/#"}, {"pattern": "devices/%c/in/#"}, {"pattern": "bench/#"}]');
SQL

declare -A PORT PID
broker() { # name, extra lines
  local port; port=$(free_port)
  printf 'listener.tcp.default = 127.0.0.1:%s\nlog.console.level = warning\nplugins.vmq_passwd = off\nplugins.vmq_acl = off\npersistent_data_dir = %s\n%s\n' \
    "$port" "$OUT/data-lua-db-$1" "$2" > "$OUT/lua-db-$1.conf"
  $BIN/vmq-broker --config "$OUT/lua-db-$1.conf" 2> "$OUT/lua-db-$1.log" & PIDS+=($!)
  PID[$1]=$!; PORT[$1]=$port
}
broker auth-off "allow_anonymous = on"
broker postgres "allow_anonymous = off
plugins.vmq_diversity = on
vmq_diversity.auth_postgres.enabled = on
vmq_diversity.postgres.host = 127.0.0.1
vmq_diversity.postgres.port = $PG_PORT
vmq_diversity.postgres.user = vmq
vmq_diversity.postgres.password = bench
vmq_diversity.postgres.database = vernemq_db"
for p in "${PORT[@]}"; do wait_port "$p"; done

record() { echo "{\"label\":\"$1\",\"broker\":\"$2\",${3#\{}" >> "$RESULTS"; echo "$1 $2: $3"; }
for _ in $(seq "$REPEATS"); do
  for b in auth-off postgres; do
    line=$($BIN/vmq-bench --json pubsub --port "${PORT[$b]}" --duration "$DURATION" --username bench \
      --scenario fan-in --clients 8 --qos 0 --payload 64 --cpu-pid "${PID[$b]}")
    record qos0-fan-in-8x1 "$b" "$line"
    sleep "$PAUSE"
  done
  for b in auth-off postgres; do
    line=$($BIN/vmq-bench --json connect --port "${PORT[$b]}" --duration "$DURATION" --clients 8 --username bench)
    record connect-8 "$b" "$line"
    sleep "$PAUSE"
  done
done

python3 - "$RESULTS" "$SMOKE" "$DURATION" "$OUT" "$COST" <<'PY'
import json, sys, statistics
from pathlib import Path
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
smoke, duration, out, cost = sys.argv[2] == "1", sys.argv[3], Path(sys.argv[4]), sys.argv[5]
def med(label, broker, key):
    v = [float(r[key]) for r in rows if r["label"] == label and r["broker"] == broker and key in r]
    return statistics.median(v) if v else 0.0
def each(label, broker, key):
    return "/".join(f"{float(r[key]):,.0f}" for r in rows if r["label"] == label and r["broker"] == broker and key in r)
off, pg = med("qos0-fan-in-8x1", "auth-off", "received_per_s"), med("qos0-fan-in-8x1", "postgres", "received_per_s")
coff, cpg = med("connect-8", "auth-off", "connects_per_s"), med("connect-8", "postgres", "connects_per_s")
r = lambda a, b: f"{a/b:.2f}" if b else "-"
table = "\n".join([
    "| scenario | auth off | PostgreSQL auth (auth_postgres, crypt) | ratio |",
    "|---|---|---|---|",
    f"| qos0-fan-in-8x1 msg/s (publishes decided by auth_cache) | {off:,.0f} ({each('qos0-fan-in-8x1', 'auth-off', 'received_per_s')}) | {pg:,.0f} ({each('qos0-fan-in-8x1', 'postgres', 'received_per_s')}) | {r(pg, off)} |",
    f"| connect-8 CONNECT/s (bcrypt cost {cost} checked by PostgreSQL) | {coff:,.0f} | {cpg:,.1f} | {r(cpg, coff)} |",
])
print(table)
(out / "lua_db.md").write_text(table + "\n")
if not smoke:
    bm = Path("BENCHMARKS.md")
    text = bm.read_text()
    begin, end = "<!-- lua-db:begin -->", "<!-- lua-db:end -->"
    section = f"{begin}\nMedians of {len(rows)//4} repeats (each repeat in brackets), {duration} s each (`bench/lua_db.sh`):\n\n{table}\n{end}"
    if begin in text:
        text = text[: text.index(begin)] + section + text[text.index(end) + len(end):]
    else:
        text += f"\n## Database auth: VerneMQ's bundled PostgreSQL script (issue 17)\n\n{section}\n"
    bm.write_text(text)
PY
