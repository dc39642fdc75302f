#!/bin/sh
# Entrypoint of the stand-in for the redis image (Debian's redis-server): like the official one, arguments that
# start with "-" or name a .conf file are redis-server's.
set -e
case "${1:-}" in -* | *.conf) set -- redis-server "$@" ;; esac
exec "$@"
