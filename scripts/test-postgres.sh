#!/usr/bin/env bash
# Starts a throwaway PostgreSQL on loopback for the tests (sourced by scripts/test.sh).
# Installs PostgreSQL from Debian's packages if it is missing. Exports:
#   ALLOT_TEST_POSTGRES   postgres://postgres@127.0.0.1:PORT/postgres
#   ALLOT_TEST_PG_STOP    a command that stops it at once (the restart test uses it)
#   ALLOT_TEST_PG_START   a command that starts it again on the same port and data
# and stops it when the calling shell exits.
set -euo pipefail
pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
if [ -z "$pgbin" ] || [ ! -x "$pgbin/initdb" ]; then
  apt-get update -qq && apt-get install -y -qq postgresql >/dev/null
  pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
fi
pgdir=$(mktemp -d /tmp/allot-pg.XXXXXX)
chown postgres "$pgdir"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
as_pg "$pgbin/initdb" -D "$pgdir/data" -A trust -U postgres --no-sync >/dev/null
# TLS with a throwaway CA: the tests connect with sslmode=verify-full against it.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=allot test pg CA" \
  -keyout "$pgdir/ca-key.pem" -out "$pgdir/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=127.0.0.1" \
  -keyout "$pgdir/server-key.pem" -out "$pgdir/server.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' > "$pgdir/san.ext"
openssl x509 -req -in "$pgdir/server.csr" -CA "$pgdir/ca.pem" -CAkey "$pgdir/ca-key.pem" -CAcreateserial -days 2 \
  -extfile "$pgdir/san.ext" -out "$pgdir/server.pem" 2>/dev/null
chmod 600 "$pgdir/server-key.pem"
chown postgres "$pgdir/server-key.pem" "$pgdir/server.pem" 2>/dev/null || true
pg_opts="-c listen_addresses=127.0.0.1 -p $port -k $pgdir -c fsync=on -c ssl=on -c ssl_cert_file=$pgdir/server.pem -c ssl_key_file=$pgdir/server-key.pem"
as_pg "$pgbin/pg_ctl" -D "$pgdir/data" -l "$pgdir/log" -w -o "$pg_opts" start >/dev/null
runas=""; [ "$(id -u)" = 0 ] && runas="runuser -u postgres --"
export ALLOT_TEST_POSTGRES="postgres://postgres@127.0.0.1:$port/postgres?sslmode=verify-full&sslrootcert=$pgdir/ca.pem"
export ALLOT_TEST_PG_STOP="$runas $pgbin/pg_ctl -D $pgdir/data -m immediate -w stop"
export ALLOT_TEST_PG_START="$runas $pgbin/pg_ctl -D $pgdir/data -l $pgdir/log -w -o '$pg_opts' start"
allot_pg_cleanup() {
  as_pg "$pgbin/pg_ctl" -D "$pgdir/data" -m fast -w stop >/dev/null 2>&1 || true
  rm -rf "$pgdir"
}
trap allot_pg_cleanup EXIT
echo "test PostgreSQL on 127.0.0.1:$port ($pgdir)"
