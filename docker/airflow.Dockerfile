# Airflow 3 with the OpenCity packages installed; the DAGs are mounted by docker-compose.yml.
# Build context: the repository root (see .dockerignore).
FROM apache/airflow:3.3.2-python3.11
USER airflow
COPY --chown=airflow:0 . /opt/opencity/src
RUN pip install --no-cache-dir "/opt/opencity/src" apache-airflow-providers-fab
