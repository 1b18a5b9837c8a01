#!/bin/bash
# First start of ckan-db: the DataStore database and its read-only role. CKAN's
# `ckan datastore set-permissions` then grants the rest (run once after the first start:
#   docker-compose exec ckan ckan datastore set-permissions | docker-compose exec -T ckan-db psql -U ckan
set -euo pipefail
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" <<SQL
CREATE ROLE "$DATASTORE_READONLY_USER" NOSUPERUSER NOCREATEDB NOCREATEROLE LOGIN
    PASSWORD '$DATASTORE_READONLY_PASSWORD';
CREATE DATABASE "$DATASTORE_DB" OWNER "$POSTGRES_USER" ENCODING 'utf-8';
SQL
