#!/usr/bin/env bash
# The test command (README, .ci/run): a throwaway PostgreSQL for the ledger tests, then every
# test, one at a time (several measure real-time behaviour that CPU-heavy tests running
# alongside would distort on a 2-core machine).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/test-postgres.sh
export ALLOT_REQUIRE_POSTGRES=1
swift test --no-parallel "$@"
