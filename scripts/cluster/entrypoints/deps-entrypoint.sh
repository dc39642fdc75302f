#!/bin/sh
# One image stands in for redis:7.4.2-bookworm, mysql:8.4.3 and postgres:16.6-bookworm (Debian's redis-server 7.0,
# MariaDB 10.11 and PostgreSQL 15; scripts/cluster/images.sh tags it with all three names). k8s/deps sets no
# command, so this entrypoint picks the server the way each official image would be used: redis arguments (a
# .conf file, an option, redis-server), else the MYSQL_* variables, else the POSTGRES_* variables.
set -e
case "${1:-}" in
  redis-server | redis-sentinel | -* | *.conf) exec /usr/local/bin/redis-entrypoint.sh "$@" ;;
esac
if [ $# -eq 0 ] || [ -z "$1" ] || [ "$1" = serve ]; then
  if [ -n "${MYSQL_ROOT_PASSWORD:-}${MYSQL_DATABASE:-}${MYSQL_USER:-}" ]; then exec /usr/local/bin/mysql-entrypoint.sh mysqld; fi
  if [ -n "${POSTGRES_PASSWORD:-}${POSTGRES_USER:-}${POSTGRES_DB:-}" ]; then exec /usr/local/bin/postgres-entrypoint.sh postgres; fi
  exec /usr/local/bin/redis-entrypoint.sh redis-server
fi
exec "$@"
