#!/usr/bin/env bash
# Runs once, on the first start of an empty data volume (docker-entrypoint-initdb.d):
# one database per server, both owned by $POSTGRES_USER. Prefect needs the pg_trgm extension.
set -euo pipefail

for db in "${PREFECT_DB:-prefect}" "${MLFLOW_DB:-mlflow}"; do
  psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
       -c "CREATE DATABASE \"${db}\" OWNER \"${POSTGRES_USER}\";"
done
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "${PREFECT_DB:-prefect}" \
     -c "CREATE EXTENSION IF NOT EXISTS pg_trgm;"
