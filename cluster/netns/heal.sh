#!/usr/bin/env bash
# cluster/netns/heal.sh — puts every namespace back on the one bridge.
source "$(dirname "$0")/lib.sh"
need_root
# Only the ports on the second bridge move (re-enslaving the others would blip them too).
for v in $(ip -o link show master allot-br2 | awk -F': ' '{print $2}' | cut -d@ -f1); do ip link set "$v" master allot-br; done
echo "healed"
