#!/bin/sh
# Writes .env for docker-compose.yml: the settings of docker/env.example plus
# a random value for each secret, created with mode 0600 (umask 077) so only
# you can read it. Refuses to overwrite an existing .env.
#   docker/new-env.sh            # in the repository root or anywhere in it
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
env_file="$root/.env"
if [ -e "$env_file" ]; then
    echo "new-env.sh: $env_file exists; not overwriting it (remove it first to start over)" >&2
    exit 1
fi
umask 077
random() {  # 32 URL-safe characters from the kernel's random source
    head -c 24 /dev/urandom | base64 | tr '+/' '-_'
}
{
    grep -v '^# [A-Z_]*=' "$root/docker/env.example"
    for name in POSTGRES_PASSWORD MLFLOW_DB_PASSWORD OPTUNA_DB_PASSWORD MLFLOW_FLASK_SERVER_SECRET_KEY \
                MLFLOW_AUTH_ADMIN_PASSWORD; do
        echo "$name=$(random)"
    done
} > "$env_file.tmp"
mv "$env_file.tmp" "$env_file"
echo "new-env.sh: wrote $env_file (mode $(stat -c %a "$env_file")); the MLflow admin password is MLFLOW_AUTH_ADMIN_PASSWORD there"
