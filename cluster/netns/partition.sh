#!/usr/bin/env bash
# cluster/netns/partition.sh NS... — cuts the listed namespaces (e.g. allot-c2 allot-n1) off
# from the others: they keep reaching each other, nobody else. heal.sh undoes it.
source "$(dirname "$0")/lib.sh"
need_root
[ $# -ge 1 ] || { echo "usage: $0 NAMESPACE..." >&2; exit 2; }
for ns in "$@"; do ip link set "$(host_veth "$ns")" master allot-br2; done
echo "partitioned: $*"
