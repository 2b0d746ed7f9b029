#!/usr/bin/env bash
# scripts/static-test.sh — issue 18, must-show 3: builds allot as one static executable (the
# Dockerfile's build: --static-swift-stdlib -Xswiftc -static-executable) in .build-static/,
# and runs it in an otherwise empty root — a fresh mount namespace chrooted into a directory
# holding only the binary, the CA bundle, /etc/passwd and an empty /tmp: `allot --version` and
# `allot demo --duration 3` (coordinator, gateways and mock upstream over mTLS on loopback).
# Not in CI (a second full build: 10–18 minutes here); results in docs/performance.md.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
CONFIG=${ALLOT_STATIC_CONFIG:-release}
swift build -c "$CONFIG" --scratch-path .build-static --product allot --static-swift-stdlib -Xswiftc -static-executable 2>&1 | tail -1
BIN=.build-static/$CONFIG/allot
echo "static-test: $(file -b "$BIN" | cut -d, -f1-2); $(ldd "$BIN" 2>&1 | head -1)"
ROOTFS=$(mktemp -d /tmp/allot-empty-root.XXXXXX)
trap 'rm -rf "$ROOTFS"' EXIT
install -D -s "$BIN" "$ROOTFS/allot"
mkdir -p "$ROOTFS/etc/ssl/certs" "$ROOTFS/tmp"
chmod 1777 "$ROOTFS/tmp"
cp /etc/ssl/certs/ca-certificates.crt "$ROOTFS/etc/ssl/certs/"
echo 'allot:x:65532:65532:allot:/nonexistent:/sbin/nologin' > "$ROOTFS/etc/passwd"
echo "static-test: the root holds: $(cd "$ROOTFS" && find . -type f | sort | tr '\n' ' ')"
# A new mount namespace (nothing of the host mounted in), chrooted into the directory.
run() { unshare --mount --fork chroot --userspec=65532:65532 "$ROOTFS" /allot "$@"; }
run --version
run demo --duration 3 --quiet --report /tmp/report.html > "$ROOTFS/demo.out" 2>&1 || { tail -20 "$ROOTFS/demo.out"; echo "static-test: FAILED: the demo" >&2; exit 1; }
tail -8 "$ROOTFS/demo.out"
[ -s "$ROOTFS/tmp/report.html" ] || { echo "static-test: FAILED: no report written" >&2; exit 1; }
echo "static-test: passed"
