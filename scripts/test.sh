#!/usr/bin/env bash
# The test command (README, .ci/run): a throwaway PostgreSQL for the ledger tests, then every
# test, one at a time (several measure real-time behaviour that CPU-heavy tests running
# alongside would distort on a 2-core machine).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/test-postgres.sh
export ALLOT_REQUIRE_POSTGRES=1
swift test --no-parallel "$@"
# Step 4, must-show 4: a partition between network namespaces (skipped, saying so, on a
# machine without root or iproute2).
if [ $# -eq 0 ]; then
  command -v curl >/dev/null || { apt-get update -qq && apt-get install -y -qq curl >/dev/null; }
  ALLOT_NETNS_MISSING_EXIT=0 bash cluster/netns/partition-test.sh
fi
