#!/usr/bin/env bash
# cluster/netns/teardown.sh — stops what the rig started (recorded PIDs), deletes its
# namespaces and bridges.
source "$(dirname "$0")/lib.sh"
need_root
if [ -s "$RUN/pids" ]; then
  while read -r pid name; do kill -TERM "$pid" 2>/dev/null || true; done < "$RUN/pids"
  sleep 1
  while read -r pid name; do kill -KILL "$pid" 2>/dev/null || true; done < "$RUN/pids"
  : > "$RUN/pids"
fi
for ns in $(ip netns list | awk '/^allot-/{print $1}'); do
  ip link del "$(host_veth "$ns")" 2>/dev/null || true
  ip netns del "$ns"
done
ip link del allot-br 2>/dev/null || true
ip link del allot-br2 2>/dev/null || true
echo "torn down"
