#!/usr/bin/env bash
# Creates the stack's two databases, each owned by its own login role:
#   mlflow  (role mlflow, password $MLFLOW_DB_PASSWORD)  - MLflow's backend store
#   optuna  (role optuna, password $OPTUNA_DB_PASSWORD)  - Optuna's RDB storage
# Each password may instead be in a file named by NAME_FILE (docker-compose.yml
# gives them as Docker secrets, so they appear in no `docker inspect`).
# In the stack (PGDATA set) the superuser is also refused over TCP: it logs in
# only through the container's unix socket (`docker compose exec postgres ...`).
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

read_password() {  # read_password VAR DEFAULT: $VAR, else the file named by ${VAR}_FILE, else DEFAULT
    local file_var="${1}_FILE"
    if [[ -n "${!file_var:-}" ]]; then
        cat "${!file_var}"
    else
        printf '%s' "${!1:-$2}"
    fi
}

create_database mlflow "$(read_password MLFLOW_DB_PASSWORD mlflow)"
create_database optuna "$(read_password OPTUNA_DB_PASSWORD optuna)"

# No superuser over the network: the first matching pg_hba.conf line wins.
if [[ -n "${PGDATA:-}" && -w "$PGDATA/pg_hba.conf" ]]; then
    sed -i "1i host all $POSTGRES_USER all reject" "$PGDATA/pg_hba.conf"
    echo "init-databases.sh: superuser '$POSTGRES_USER' refused over TCP"
fi
