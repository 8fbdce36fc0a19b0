#!/usr/bin/env bash
# TEST-ONLY entrypoint of the postgres:15-bookworm stand-in (see ../README.md).
# Follows the part of the official image's documented contract that
# docker-compose.yml uses:
#   POSTGRES_USER (default postgres), POSTGRES_PASSWORD (required) or
#   POSTGRES_PASSWORD_FILE (a file holding it, e.g. a Docker secret), PGDATA;
#   on an empty PGDATA: initdb, then /docker-entrypoint-initdb.d/*.sh in name
#   order (executable ones run, the others sourced) against a temporary server
#   listening on the unix socket only; then the real server on port 5432, run
#   as the postgres user; TCP connections need the password (scram-sha-256).
set -Eeo pipefail

if [ "${1:0:1}" = '-' ]; then
  set -- postgres "$@"
fi
if [ "$1" != postgres ]; then
  exec "$@"
fi

if [ "$(id -u)" = 0 ]; then
  mkdir -p "$PGDATA"
  chown postgres:postgres "$PGDATA"
  chmod 700 "$PGDATA"
  exec setpriv --reuid=postgres --regid=postgres --init-groups "$BASH_SOURCE" "$@"
fi

: "${POSTGRES_USER:=postgres}"
export POSTGRES_USER
if [ -n "${POSTGRES_PASSWORD_FILE:-}" ]; then
  POSTGRES_PASSWORD="$(< "$POSTGRES_PASSWORD_FILE")"
fi
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  if [ -z "${POSTGRES_PASSWORD:-}" ]; then
    echo "docker-entrypoint.sh: the database is uninitialized and POSTGRES_PASSWORD is not set" >&2
    exit 1
  fi
  initdb --username="$POSTGRES_USER" --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") -D "$PGDATA"
  printf '\nhost all all all scram-sha-256\n' >> "$PGDATA/pg_hba.conf"
  pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start
  for f in /docker-entrypoint-initdb.d/*; do
    case "$f" in
      *.sh)
        if [ -x "$f" ]; then
          echo "docker-entrypoint.sh: running $f"
          "$f"
        else
          echo "docker-entrypoint.sh: sourcing $f"
          . "$f"
        fi
        ;;
      *) [ -e "$f" ] && echo "docker-entrypoint.sh: ignoring $f" ;;
    esac
  done
  pg_ctl -D "$PGDATA" -m fast -w stop
  echo "docker-entrypoint.sh: PostgreSQL init process complete; ready for start up."
fi

exec "$@"
