# shellcheck shell=bash
# Shared by bench scripts that start one coordinator and gateways (source it).

# bench_certs BIN DIR NODE...: a trust root in DIR, coordinator c1 on 127.0.0.1, the named nodes
# (the callers' allot.yaml name coordinator c1 on 127.0.0.1 and these nodes).
bench_certs() {
  local bin=$1 dir=$2; shift 2
  "$bin" certs init --dir "$dir" > /dev/null
  "$bin" certs issue --dir "$dir" --role coordinator --name c1 --ip 127.0.0.1 > /dev/null
  local n; for n in "$@"; do "$bin" certs issue --dir "$dir" --role node --name "$n" > /dev/null; done
}

# The "bench" tier's templates: limits that never bind (the decision runs, nothing is refused).
BENCH_NEVER_BINDING='      - {name: rpm, scope: [consumer], unit: requests, kind: rate, limit: 100000000, period: 1m}
      - {name: tpm, scope: [consumer], unit: tokens, kind: rate, limit: 100000000000, period: 1m}'
