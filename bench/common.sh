# Shared by the bench scripts (sourced, after `cd` to the repository root): the --smoke switch,
# the build, process cleanup, free ports and result lines.
#
#   bench_setup "$@" -- <cargo build targets>   sets SMOKE PROFILE DURATION OUT BIN, builds
#   start <name> <command...>                   runs a process in the background, PID[name]
#   free_port / wait_port <port>
#   record <results.jsonl> <label> <broker> <json>   appends one result line, tagged

bench_setup() {
  SMOKE=0
  if [ "${1:-}" = "--smoke" ]; then SMOKE=1; shift; fi
  [ "${1:-}" = "--" ] && shift
  if [ "$SMOKE" = 1 ]; then
    PROFILE=debug; DURATION=${DURATION:-1}; OUT=target/bench-smoke
    cargo build --jobs 2 "$@"
  else
    PROFILE=release; DURATION=${DURATION:-10}; OUT=target/bench
    cargo build --release --jobs 2 "$@"
  fi
  BIN=target/$PROFILE
  mkdir -p "$OUT"
}

PIDS=()
declare -A PID
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

start() { # name, log file, command...
  local name=$1 log=$2; shift 2
  "$@" > "$log" 2>&1 &
  PIDS+=($!); PID[$name]=$!
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened" >&2; exit 1; }

record() { # results file, label, broker, json line from vmq-bench
  echo "{\"label\":\"$2\",\"broker\":\"$3\",${4#\{}" >> "$1"
  echo "$2 $3: $4"
}
