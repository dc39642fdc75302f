#!/bin/bash
# Entrypoint of the stand-in for the postgres image (Debian's PostgreSQL 15): on an empty PGDATA it runs initdb
# with POSTGRES_USER/POSTGRES_PASSWORD, lets every address in with a password and creates POSTGRES_DB, as the
# official image does; then runs the server in the foreground.
set -euo pipefail
case "${1:-}" in -*) set -- postgres "$@" ;; esac
if [ "${1:-}" != postgres ]; then exec "$@"; fi
shift
: "${PGDATA:=/var/lib/postgresql/data}" "${POSTGRES_USER:=postgres}" "${POSTGRES_DB:=$POSTGRES_USER}"
sock=/var/run/postgresql
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  echo "postgres-entrypoint: initialising $PGDATA"
  mkdir -p "$PGDATA" && chmod 700 "$PGDATA"
  pw=$(mktemp) && printf '%s' "${POSTGRES_PASSWORD:-}" >"$pw"
  initdb -D "$PGDATA" -U "$POSTGRES_USER" --pwfile="$pw" -E UTF8 --locale=C --auth-local=trust \
    --auth-host=scram-sha-256 >/tmp/initdb.log 2>&1 || { cat /tmp/initdb.log; exit 1; }
  rm -f "$pw"
  echo 'host all all all scram-sha-256' >>"$PGDATA/pg_hba.conf"
  pg_ctl -D "$PGDATA" -w -o "-c listen_addresses='' -c unix_socket_directories=$sock" start >/dev/null
  if [ "$POSTGRES_DB" != postgres ]; then
    psql -v ON_ERROR_STOP=1 -h "$sock" -U "$POSTGRES_USER" -d postgres -q -c "CREATE DATABASE \"$POSTGRES_DB\""
  fi
  pg_ctl -D "$PGDATA" -w -m fast stop >/dev/null
  echo "postgres-entrypoint: initialised"
fi
exec postgres -D "$PGDATA" -c listen_addresses='*' -c unix_socket_directories="$sock" "$@"
