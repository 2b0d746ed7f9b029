#!/usr/bin/env bash
# cluster/local/down.sh — stops exactly the processes cluster/local/up.sh (or cluster/regions/up.sh) started (by the PIDs
# it recorded): SIGTERM first (leases go back, ledgers flush), SIGKILL after 10 s.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
RUN=${ALLOT_LOCAL_DIR:-$ROOT/cluster/local/run}
[ -s "$RUN/pids" ] || { echo "nothing to stop (no $RUN/pids)"; exit 0; }
alive() { kill -0 "$1" 2>/dev/null; }
# In reverse order of launch: gateways first (they release their leases to live coordinators),
# then regional coordinators (they release to the global cluster), coordinators, the mock.
order=$(tac "$RUN/pids")
while read -r pid name; do
  [ -n "$pid" ] || continue
  if alive "$pid"; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do alive "$pid" || break; sleep 0.1; done
    if alive "$pid"; then kill -KILL "$pid" 2>/dev/null || true; echo "killed $name ($pid)"; else echo "stopped $name ($pid)"; fi
  fi
done <<< "$order"
: > "$RUN/pids"
