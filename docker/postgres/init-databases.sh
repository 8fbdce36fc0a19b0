#!/usr/bin/env bash
# Creates the stack's two databases, each owned by its own login role:
#   mlflow  (role mlflow, password $MLFLOW_DB_PASSWORD)  - MLflow's backend store
#   optuna  (role optuna, password $OPTUNA_DB_PASSWORD)  - Optuna's RDB storage
#
# The postgres image runs this once, from /docker-entrypoint-initdb.d, on an
# empty data volume. The test fixtures run the same file against their own
# cluster, with PGHOST/PGPORT pointing at it.
set -euo pipefail

: "${POSTGRES_USER:=postgres}"

create_database() {
    local name=$1 password=$2
    if [[ -z "$password" ]]; then
        echo "init-databases.sh: the password for role '$name' is empty" >&2
        exit 1
    fi
    # psql variables (:"ident", :'literal') quote the name and password, so any
    # characters are safe here (the URLs built from them still need URL-safe ones).
    psql -v ON_ERROR_STOP=1 --no-psqlrc --username "$POSTGRES_USER" --dbname postgres \
        --set=name="$name" --set=password="$password" <<'SQL'
CREATE ROLE :"name" LOGIN PASSWORD :'password';
CREATE DATABASE :"name" OWNER :"name";
REVOKE ALL ON DATABASE :"name" FROM PUBLIC;
SQL
    echo "init-databases.sh: created database and role '$name'"
}

create_database mlflow "${MLFLOW_DB_PASSWORD:-mlflow}"
create_database optuna "${OPTUNA_DB_PASSWORD:-optuna}"
