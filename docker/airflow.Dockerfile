# Airflow 3 with the OpenCity packages and the production extra (Celery provider,
# PostgreSQL provider, psycopg 3, asyncpg); the DAGs are mounted by docker-compose.yml.
# Build context: the repository root (see .dockerignore).
ARG AIRFLOW_VERSION=3.3.2
ARG PYTHON_VERSION=3.11
FROM apache/airflow:${AIRFLOW_VERSION}-python${PYTHON_VERSION}
ARG AIRFLOW_VERSION
ARG PYTHON_VERSION
# Airflow's own constraints file for this Airflow and Python (the image ships it as
# ~/constraints.txt; the URL is the same file): Airflow and the providers installed at the
# versions Airflow tested together, and Airflow itself never up- or downgraded by a
# dependency of ours.
ARG AIRFLOW_CONSTRAINTS=https://raw.githubusercontent.com/apache/airflow/constraints-${AIRFLOW_VERSION}/constraints-${PYTHON_VERSION}.txt
USER airflow
RUN pip install --no-cache-dir --constraint "${AIRFLOW_CONSTRAINTS}" \
        "apache-airflow==${AIRFLOW_VERSION}" \
        apache-airflow-providers-fab apache-airflow-providers-amazon
COPY --chown=airflow:0 . /opt/opencity/src
# Our own pins (pyproject's production extra) on top, with Airflow held at its version.
RUN pip install --no-cache-dir "apache-airflow==${AIRFLOW_VERSION}" "/opt/opencity/src[production]"
# Refuse to start with a change-me placeholder (docker/refuse-placeholders, mode 755 in git),
# then Airflow's own entrypoint.
COPY docker/refuse-placeholders /usr/local/bin/opencity-refuse-placeholders
ENTRYPOINT ["/usr/bin/dumb-init", "--", "/usr/local/bin/opencity-refuse-placeholders", "/entrypoint"]
CMD []
