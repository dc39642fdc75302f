#!/bin/bash
# Entrypoint of the stand-in for the mysql image (Debian's MariaDB 10.11): on an empty data directory it creates
# the system tables, sets MYSQL_ROOT_PASSWORD, creates MYSQL_DATABASE and MYSQL_USER/MYSQL_PASSWORD with all
# rights on it, as the official image does; then runs the server in the foreground.
set -euo pipefail
case "${1:-}" in -*) set -- mysqld "$@" ;; esac
if [ "${1:-}" != mysqld ] && [ "${1:-}" != mariadbd ]; then exec "$@"; fi
shift
datadir=/var/lib/mysql
if [ ! -d "$datadir/mysql" ]; then
  echo "mysql-entrypoint: initialising $datadir"
  mariadb-install-db --datadir="$datadir" --auth-root-authentication-method=normal --skip-test-db \
    --skip-name-resolve >/tmp/install-db.log 2>&1 || { cat /tmp/install-db.log; exit 1; }
  mariadbd --skip-networking --socket=/tmp/init.sock --pid-file=/tmp/init.pid &
  pid=$!
  for _ in $(seq 1 60); do
    mariadb -S /tmp/init.sock -uroot -e 'SELECT 1' >/dev/null 2>&1 && break
    sleep 1
  done
  esc() { printf '%s' "$1" | sed "s/'/''/g"; }
  {
    echo "ALTER USER 'root'@'localhost' IDENTIFIED BY '$(esc "${MYSQL_ROOT_PASSWORD:-}")';"
    if [ -n "${MYSQL_DATABASE:-}" ]; then echo "CREATE DATABASE IF NOT EXISTS \`$MYSQL_DATABASE\`;"; fi
    if [ -n "${MYSQL_USER:-}" ]; then
      echo "CREATE USER '$MYSQL_USER'@'%' IDENTIFIED BY '$(esc "${MYSQL_PASSWORD:-}")';"
      if [ -n "${MYSQL_DATABASE:-}" ]; then echo "GRANT ALL ON \`$MYSQL_DATABASE\`.* TO '$MYSQL_USER'@'%';"; fi
    fi
    echo "FLUSH PRIVILEGES;"
  } | mariadb -S /tmp/init.sock -uroot
  kill "$pid"
  wait "$pid" || true
  echo "mysql-entrypoint: initialised"
fi
exec mariadbd "$@"
