# Airflow 3 with the OpenCity packages and the production extra (Celery provider,
# PostgreSQL provider, psycopg 3, asyncpg); the DAGs are mounted by docker-compose.yml.
# Build context: the repository root (see .dockerignore).
FROM apache/airflow:3.3.2-python3.11
USER airflow
COPY --chown=airflow:0 . /opt/opencity/src
RUN pip install --no-cache-dir "/opt/opencity/src[production]" \
    apache-airflow-providers-fab apache-airflow-providers-amazon
