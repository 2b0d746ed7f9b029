# Shared by the cluster/netns scripts. Namespaces allot-c0.. (coordinators, 10.200.0.10+i)
# and allot-n0.. (nodes, 10.200.0.20+j) hang off bridge allot-br; a partition moves some of
# them to bridge allot-br2, where they reach only each other. Needs root (ip netns, veth).
set -euo pipefail
NETNS_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$NETNS_ROOT/../.." && pwd)
RUN=${ALLOT_NETNS_DIR:-$NETNS_ROOT/run}
BIN=${ALLOT_BIN:-$REPO/.build/debug/allot}
coord_ip() { echo "10.200.0.$((10 + $1))"; }
node_ip() { echo "10.200.0.$((20 + $1))"; }
host_veth() { echo "v-$1"; }   # host end of a namespace's veth (name ≤ 15 chars)
need_root() {
  [ "$(id -u)" = 0 ] || { echo "cluster/netns needs root (ip netns, veth, bridges)" >&2; exit ${ALLOT_NETNS_MISSING_EXIT:-1}; }
  command -v ip >/dev/null || { echo "cluster/netns needs iproute2 (ip)" >&2; exit ${ALLOT_NETNS_MISSING_EXIT:-1}; }
}
in_ns() { local ns=$1; shift; ip netns exec "$ns" "$@"; }
# Starts a process inside a namespace, logs in $RUN/logs, PID recorded in $RUN/pids.
launch() {
  local ns=$1 name=$2; shift 2
  ip netns exec "$ns" "$@" > "$RUN/logs/$name.log" 2>&1 &
  echo "$! $name" >> "$RUN/pids"
}
