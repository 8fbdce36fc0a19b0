#!/bin/sh
# Entrypoint of the stack's Python services (mounted read-only at
# /stack/with-secrets.sh). For every NAME_FILE variable it exports NAME with
# that file's content (a Docker secret in /run/secrets, mode 0400, owned by
# the service's user), then runs the command, as RUN_AS=UID:GID when set
# (the container starts as root: see docker-compose.yml). Passwords thus reach the
# process environment only (readable by that uid and root), never a command
# line, `docker compose config` or `docker inspect`. libpq reads PGPASSWORD,
# so database URLs carry no password.
set -eu
for var in $(env | sed -n 's/^\([A-Za-z_][A-Za-z0-9_]*\)_FILE=.*/\1/p'); do
    eval "file=\${${var}_FILE}"
    if [ ! -r "$file" ]; then
        echo "with-secrets.sh: cannot read $file (${var}_FILE) as uid $(id -u)" >&2
        exit 1
    fi
    value=$(cat "$file")
    export "$var=$value"
    unset "${var}_FILE"
done
if [ -n "${RUN_AS:-}" ] && [ "$(id -u)" = 0 ]; then
    uid=${RUN_AS%%:*} gid=${RUN_AS##*:}
    unset RUN_AS
    exec setpriv --reuid="$uid" --regid="$gid" --clear-groups "$@"
fi
exec "$@"
