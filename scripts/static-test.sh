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
chmod 755 "$ROOTFS"
install -D -s "$BIN" "$ROOTFS/allot"
mkdir -p "$ROOTFS/etc/ssl/certs" "$ROOTFS/tmp"
chmod 1777 "$ROOTFS/tmp"
cp /etc/ssl/certs/ca-certificates.crt "$ROOTFS/etc/ssl/certs/"
echo 'allot:x:65532:65532:allot:/nonexistent:/sbin/nologin' > "$ROOTFS/etc/passwd"
echo "static-test: the root holds: $(cd "$ROOTFS" && find . -type f | sort | tr '\n' ' ')(and /proc, /dev/{null,zero,random,urandom}, mounted)"
# New mount and PID namespaces (nothing of the host mounted in), chrooted into the directory,
# with what every container runtime provides and nothing else: /proc (the Swift runtime reads
# /proc/self/exe) and the device nodes null, zero, random and urandom (key generation and
# UUIDs read urandom) on a tmpfs /dev.
mkdir -p "$ROOTFS/proc" "$ROOTFS/dev"
run() {
  unshare --mount --pid --fork /bin/sh -c '
    mount -t proc proc "$0/proc" && mount -t tmpfs -o mode=755 tmpfs "$0/dev" &&
    mknod -m 666 "$0/dev/null" c 1 3 && mknod -m 666 "$0/dev/zero" c 1 5 &&
    mknod -m 666 "$0/dev/random" c 1 8 && mknod -m 666 "$0/dev/urandom" c 1 9 &&
    exec chroot --userspec=65532:65532 "$0" /allot "$@"' "$ROOTFS" "$@"
}
run --version
run demo --duration 3 --quiet --report /tmp/report.html > "$ROOTFS/demo.out" 2>&1 || { tail -20 "$ROOTFS/demo.out"; echo "static-test: FAILED: the demo" >&2; exit 1; }
cp "$ROOTFS/demo.out" /tmp/static-demo.out; tail -8 "$ROOTFS/demo.out"
[ -s "$ROOTFS/tmp/report.html" ] || { echo "static-test: FAILED: no report written" >&2; exit 1; }
admitted=$(sed -n 's/^requests [0-9]*, admitted \([0-9]*\);.*/\1/p' "$ROOTFS/demo.out")
[ "${admitted:-0}" -gt 0 ] || { echo "static-test: FAILED: the demo admitted nothing (no leases: TLS or the coordinator failed)" >&2; exit 1; }
grep -q "total overshoot: 0" "$ROOTFS/demo.out" || { echo "static-test: FAILED: overshoot" >&2; exit 1; }
echo "static-test: passed"
