#!/usr/bin/env bash
# cluster/netns/setup.sh [C] [N] — creates C coordinator and N node network namespaces on one
# bridge (10.200.0.0/24). Idempotent: tears down a previous rig first.
source "$(dirname "$0")/lib.sh"
need_root
C=${1:-3}; N=${2:-2}
"$NETNS_ROOT/teardown.sh" >/dev/null 2>&1 || true
ip link add allot-br type bridge
ip link add allot-br2 type bridge
ip link set allot-br up
ip link set allot-br2 up
add_ns() { # ns, ip
  local ns=$1 addr=$2 v; v=$(host_veth "$ns")
  ip netns add "$ns"
  ip link add "$v" type veth peer name eth0 netns "$ns"
  ip link set "$v" master allot-br up
  in_ns "$ns" ip addr add "$addr/24" dev eth0
  in_ns "$ns" ip link set eth0 up
  in_ns "$ns" ip link set lo up
}
for ((i = 0; i < C; i++)); do add_ns "allot-c$i" "$(coord_ip $i)"; done
for ((j = 0; j < N; j++)); do add_ns "allot-n$j" "$(node_ip $j)"; done
mkdir -p "$RUN/logs"
: > "$RUN/pids"
echo "$C $N" > "$RUN/size"
echo "namespaces: $(ip netns list | awk '/^allot-/{print $1}' | sort | tr '\n' ' ')"
