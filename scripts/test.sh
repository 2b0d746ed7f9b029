#!/usr/bin/env bash
# The test command (README, .ci/run): a throwaway PostgreSQL for the ledger tests, then every
# test, one at a time (several measure real-time behaviour that CPU-heavy tests running
# alongside would distort on a 2-core machine).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/test-postgres.sh
export ALLOT_REQUIRE_POSTGRES=1
# The official OpenAI and Anthropic Python SDKs and Python's gRPC stack, pinned, in a
# throwaway venv for SDKTests and the Envoy rate-limit service's Python client (skipped,
# saying so, when pip cannot install them).
if [ -z "${ALLOT_SDK_PYTHON:-}" ]; then
  venv=.build/sdk-venv
  if "$venv/bin/python" -c "import openai, anthropic, grpc, grpc_tools" 2>/dev/null \
     || { python3 -m venv "$venv" && "$venv/bin/pip" install -q openai==3.57.0 anthropic==2.16.0 grpcio==1.85.4 grpcio-tools==1.85.4; }; then
    export ALLOT_SDK_PYTHON="$PWD/$venv/bin/python"
  else
    echo "test.sh: could not install the openai/anthropic SDKs and grpcio from PyPI; SDKTests and PythonClientTests will be skipped" >&2
  fi
fi
# promtool (Debian's prometheus package) for ObservabilityTests: the alert rules and the
# dashboard's queries.
command -v promtool > /dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus > /dev/null; } \
  || echo "test.sh: could not install promtool; ObservabilityTests will fail" >&2
export ALLOT_REQUIRE_PROMTOOL=1
# jq for LogFormatTests: JSON log lines must parse line by line with jq.
command -v jq > /dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq jq > /dev/null; } \
  || echo "test.sh: could not install jq; LogFormatTests will fail" >&2
export ALLOT_REQUIRE_JQ=1
# Issue 16, must-show 2: the module import graph, checked against the layering.
bash scripts/layering.sh
# The property tests over 64 random fleets per scenario here (200 by default, 1,000 in
# bench/properties.sh): CI stays well under 30 minutes on 2 cores.
export ALLOT_PROPERTY_SEEDS=${ALLOT_PROPERTY_SEEDS:-64}
swift test --no-parallel "$@"
# Step 4, must-show 4: a partition between network namespaces (skipped, saying so, on a
# machine without root or iproute2).
if [ $# -eq 0 ]; then
  # Issue 16, must-show 1 (quick form): the simulator prints what the committed copy says.
  bash scripts/simulate-golden.sh --quick
  command -v curl >/dev/null || { apt-get update -qq && apt-get install -y -qq curl >/dev/null; }
  ALLOT_NETNS_MISSING_EXIT=0 bash cluster/netns/partition-test.sh
  # Issue 15, must-show 2: five coordinators, two seeds, both seeds cut off with a node (the
  # quorum is a majority of the five: the seeds' side stops granting).
  ALLOT_NETNS_MISSING_EXIT=0 bash cluster/netns/partition-test.sh 5 2 allot-c0 allot-c1 allot-n1
  # Issue 18, must-show 2: nginx (Debian's, with njs) in front of the mock upstream, its
  # budgets kept by a gateway's sidecar API.
  ALLOT_BIN=$PWD/.build/debug/allot bash cluster/nginx/nginx-test.sh
fi
