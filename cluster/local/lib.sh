# cluster/local/lib.sh — shared by cluster/local/up.sh and cluster/regions/up.sh (sourced).
# Expects ROOT (the checkout) and RUN (the run directory, the working directory).

# Refuses to start over a running set (its PIDs are in $RUN/pids).
refuse_if_running() {
  if [ -s "$RUN/pids" ]; then
    echo "already running from $RUN (ALLOT_LOCAL_DIR=$RUN cluster/local/down.sh stops it)" >&2
    exit 1
  fi
}

# Sets BIN: $ALLOT_BIN, or a debug build of this checkout.
find_bin() {
  BIN=${ALLOT_BIN:-}
  if [ -z "$BIN" ]; then
    (cd "$ROOT" && swift build --product allot 2>&1 | tail -1)
    BIN=$ROOT/.build/debug/allot
  fi
}

# launch NAME ARGS…: starts `allot ARGS…` in the background, logs to logs/NAME.log, records its PID.
launch() {
  local name=$1; shift
  "$BIN" "$@" > "logs/$name.log" 2>&1 &
  echo "$! $name" >> pids
}

# wait_ready ADMIN_PORT…: waits (at most 30 s) until every admin endpoint answers /readyz.
wait_ready() {
  local ok=0
  for _ in $(seq 1 150); do
    ok=1
    for p in "$@"; do curl -fs "http://127.0.0.1:$p/readyz" >/dev/null 2>&1 || ok=0; done
    [ $ok = 1 ] && return 0
    sleep 0.2
  done
  echo "warning: not everything reported ready within 30 s; see $RUN/logs" >&2
}
