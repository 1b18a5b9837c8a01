"""docker-compose.yml is valid for Debian's docker-compose (the old schema) - no engine needed.

CI installs the binary with: apt-get install -y --no-install-recommends docker-compose
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
ENV_EXAMPLE = REPO / "docker" / "compose.env.example"
SERVICES = {"airflow-db", "airflow-redis", "airflow-init", "airflow-apiserver",
            "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer", "airflow-worker",
            "ckan-db", "solr", "ckan-redis", "ckan", "minio", "minio-init", "opencity-state-db"}


def _compose(*args: str) -> subprocess.CompletedProcess:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose is not installed (apt-get install -y "
                    "--no-install-recommends docker-compose)")
    return subprocess.run([binary, "-f", str(REPO / "docker-compose.yml"), *args],
                          capture_output=True, text=True, timeout=120, cwd=REPO, check=False)


def test_compose_file_validates():
    proc = _compose("--env-file", str(ENV_EXAMPLE), "config", "-q")
    assert proc.returncode == 0, proc.stderr


def test_compose_services_ports_and_mounts():
    proc = _compose("--env-file", str(ENV_EXAMPLE), "config")
    assert proc.returncode == 0, proc.stderr
    config = yaml.safe_load(proc.stdout)
    services = config["services"]
    assert set(services) == SERVICES
    assert services["airflow-worker"]["command"] == ["airflow", "celery", "worker"]
    assert services["airflow-worker"]["environment"]["AIRFLOW__CORE__EXECUTOR"] == \
        "CeleryExecutor"
    assert services["solr"]["image"].startswith("ckan/ckan-solr:")
    assert "datastore" in services["ckan"]["environment"]["CKAN__PLUGINS"]
    assert "dcat" in services["ckan"]["environment"]["CKAN__PLUGINS"].split()
    for name, svc in services.items():  # published ports bind the loopback only
        for port in svc.get("ports", []):
            host_ip = port.get("host_ip") if isinstance(port, dict) else str(port).split(":")[0]
            assert host_ip == "127.0.0.1", f"{name} publishes {port} on every interface"
    for name in ("airflow-scheduler", "airflow-dag-processor", "airflow-worker"):
        targets = [v["target"] if isinstance(v, dict) else v.split(":")[1]
                   for v in services[name]["volumes"]]
        assert "/opt/opencity/dags" in targets, f"{name}: the OpenCity DAGs are not mounted"


def test_compose_refuses_to_start_without_secrets(tmp_path):
    empty = tmp_path / "empty.env"
    empty.write_text("")
    proc = _compose("--env-file", str(empty), "config", "-q")
    assert proc.returncode != 0
    assert "AIRFLOW_DB_PASSWORD" in proc.stderr or "CKAN_DB_PASSWORD" in proc.stderr


def _config() -> dict:
    proc = _compose("--env-file", str(ENV_EXAMPLE), "config")
    assert proc.returncode == 0, proc.stderr
    return yaml.safe_load(proc.stdout)


def test_admin_user_is_created_by_init():
    init = _config()["services"]["airflow-init"]
    script = " ".join(init["command"]) if isinstance(init["command"], list) else init["command"]
    assert "airflow db migrate" in script
    assert "airflow users create" in script and "--role Admin" in script
    assert init["environment"]["AIRFLOW_ADMIN_PASSWORD"]


def test_secrets_are_in_no_container_environment():
    """The HMAC key and the CKAN token come from the connections file, a compose secret
    mounted into the task-running containers only."""
    config = _config()
    for name, svc in config["services"].items():
        env = svc.get("environment", {})
        assert "OPENCITY_HMAC_KEY" not in env, f"{name} has the HMAC key in its environment"
        assert "AIRFLOW_CONN_OPENCITY_HMAC" not in env, name
        assert "AIRFLOW_CONN_OPENCITY_CKAN" not in env, name
    assert "opencity_connections" in config["secrets"]
    for name in ("airflow-worker", "airflow-triggerer"):
        svc = config["services"][name]
        secrets = [x if isinstance(x, str) else x["source"] for x in svc["secrets"]]
        assert secrets == ["opencity_connections"], name
        assert "LocalFilesystemBackend" in svc["environment"]["AIRFLOW__SECRETS__BACKEND"]
        assert "/run/secrets/opencity_connections" in \
            svc["environment"]["AIRFLOW__SECRETS__BACKEND_KWARGS"]
    for name in ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor"):
        assert not config["services"][name].get("secrets"), f"{name} needs no secret"
    example = (REPO / "docker" / "connections.json.example").read_text()
    import json

    assert {"opencity_hmac", "opencity_ckan"} <= set(json.loads(example))


def test_every_long_running_service_has_a_healthcheck_without_wget_on_ckan():
    services = _config()["services"]
    for name, svc in services.items():
        if name in ("airflow-init", "minio-init"):
            continue
        assert svc.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
    ckan_test = " ".join(services["ckan"]["healthcheck"]["test"])
    assert "wget" not in ckan_test and "curl" not in ckan_test
    assert "SchedulerJob" in services["airflow-scheduler"]["healthcheck"]["test"]
    assert "DagProcessorJob" in services["airflow-dag-processor"]["healthcheck"]["test"]
    assert "inspect ping" in " ".join(services["airflow-worker"]["healthcheck"]["test"])


def test_workers_share_no_run_volume_but_object_storage_and_the_state_db():
    config = _config()
    worker = config["services"]["airflow-worker"]
    mounts = {(v["target"] if isinstance(v, dict) else v.split(":")[1]):
              (v.get("read_only", False) if isinstance(v, dict) else v.endswith(":ro"))
              for v in worker["volumes"]}
    assert mounts.get("/opt/opencity/raw") is True, "raw landing area not mounted read-only"
    assert "/opt/opencity/runs" not in mounts, "a run volume shared by the workers is back"
    env = worker["environment"]
    assert env["OPENCITY_RAW_DIR"] == "/opt/opencity/raw"
    assert env["OPENCITY_RUN_DIR"].startswith("s3://opencity-runs/")
    assert env["AWS_ENDPOINT_URL"] == "http://minio:9000"
    assert env["OPENCITY_STATE_URL"].startswith("postgresql://")
    assert "@" in env["OPENCITY_STATE_URL"] and ":" not in \
        env["OPENCITY_STATE_URL"].split("@")[0].removeprefix("postgresql://"), \
        "the state DB password is in its URL"
    assert env["OPENCITY_PUBLISH_TARGET"] == "ckan"  # a local catalog is one machine's
    assert "opencity-runs" in " ".join(config["services"]["minio-init"]["command"])
    assert "opencity-state-db" in worker["depends_on"]


def test_ckan_dockerfile_installs_as_root_then_drops_privileges():
    lines = [ln.strip() for ln in (REPO / "docker" / "ckan.Dockerfile").read_text()
             .splitlines() if ln.strip() and not ln.startswith("#")]
    users = [i for i, ln in enumerate(lines) if ln.startswith("USER ")]
    pips = [i for i, ln in enumerate(lines) if "pip install" in ln]
    assert pips and users
    assert lines[users[0]] == "USER root" and users[0] < pips[0]
    assert lines[users[-1]] != "USER root" and users[-1] > pips[-1], "image runs as root"


def test_production_extra_pins_the_celery_and_postgres_drivers():
    import tomllib

    extra = tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]["production"]
    names = {e.split("[")[0].split("=")[0] for e in extra}
    assert {"apache-airflow-providers-celery", "apache-airflow-providers-postgres",
            "psycopg", "asyncpg", "s3fs"} <= names
    assert all("==" in e for e in extra), "production extra must be pinned"
    dockerfile = (REPO / "docker" / "airflow.Dockerfile").read_text()
    assert "[production]" in dockerfile


# -- Issue 23 item 8: secrets where needed, start order, constraints, placeholders refused ---
AIRFLOW = ("airflow-init", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor",
           "airflow-triggerer", "airflow-worker")
TASKS = ("airflow-worker", "airflow-triggerer")


def _env_values() -> dict[str, str]:
    return dict(line.split("=", 1) for line in ENV_EXAMPLE.read_text().splitlines()
                if line and not line.startswith("#"))


def _unique_env(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """The example .env with every placeholder a distinct value (told apart by value)."""
    import secrets

    values = {k: (f"{k.lower()}-{secrets.token_hex(8)}" if "change-me" in v else v)
              for k, v in _env_values().items()}
    path = tmp_path / "unique.env"
    path.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    return path, values


def test_object_store_and_state_db_secrets_only_where_needed(tmp_path):
    env_file, values = _unique_env(tmp_path)
    proc = _compose("--env-file", str(env_file), "config")
    assert proc.returncode == 0, proc.stderr
    services = yaml.safe_load(proc.stdout)["services"]
    root_pw, state_pw = values["MINIO_ROOT_PASSWORD"], values["OPENCITY_STATE_DB_PASSWORD"]
    tasks_pw, logs_pw = values["MINIO_TASKS_PASSWORD"], values["MINIO_LOGS_PASSWORD"]
    for name, svc in services.items():
        env = " ".join(f"{k}={v}" for k, v in (svc.get("environment") or {}).items())
        if name not in ("minio", "minio-init"):
            assert root_pw not in env and "MINIO_ROOT" not in env, \
                f"{name} has MinIO's root credentials"
        if name in TASKS:
            assert state_pw in svc["environment"]["PGPASSWORD"], name
            assert svc["environment"]["AWS_SECRET_ACCESS_KEY"] == tasks_pw, name
            assert tasks_pw in svc["environment"]["AIRFLOW_CONN_OPENCITY_LOGS"], name
        elif name != "opencity-state-db":
            assert state_pw not in env and "PGPASSWORD" not in env, \
                f"{name} has the state DB password"
            assert tasks_pw not in env or name == "minio-init", \
                f"{name} has the task user of the object store"
    api = services["airflow-apiserver"]["environment"]
    assert logs_pw in api["AIRFLOW_CONN_OPENCITY_LOGS"]  # reads task logs, read-only user
    for name in ("airflow-scheduler", "airflow-dag-processor", "airflow-init"):
        env = services[name]["environment"]
        assert "AWS_SECRET_ACCESS_KEY" not in env and "AIRFLOW_CONN_OPENCITY_LOGS" not in env
    # the users minio-init creates have policies limited to OpenCity's buckets
    import json

    for policy in ("opencity-tasks", "airflow-logs-read"):
        doc = json.loads((REPO / "docker" / "minio" / f"{policy}.json").read_text())
        resources = {r for st in doc["Statement"] for r in st["Resource"]}
        assert resources and all(r.startswith(("arn:aws:s3:::opencity-",
                                                "arn:aws:s3:::airflow-logs"))
                                 for r in resources), policy
        assert policy in services["minio-init"]["command"][0]


def test_airflow_starts_after_the_buckets_exist():
    services = _config()["services"]
    for name in AIRFLOW:
        dep = services[name]["depends_on"]
        assert dep["minio-init"]["condition"] == "service_completed_successfully", name
    assert services["minio-init"]["depends_on"]["minio"]["condition"] == "service_healthy"


def test_airflow_image_is_built_with_airflows_constraints():
    text = (REPO / "docker" / "airflow.Dockerfile").read_text()
    assert "ARG AIRFLOW_VERSION=3.3.2" in text
    assert ("https://raw.githubusercontent.com/apache/airflow/"
            "constraints-${AIRFLOW_VERSION}/constraints-${PYTHON_VERSION}.txt") in text
    install = [ln for ln in text.replace("\\\n", " ").splitlines() if "pip install" in ln]
    assert '--constraint "${AIRFLOW_CONSTRAINTS}"' in install[0]
    assert '"apache-airflow==${AIRFLOW_VERSION}"' in install[0]
    # our own pins on top never move Airflow off the constrained version
    assert all('"apache-airflow==${AIRFLOW_VERSION}"' in ln for ln in install)


def test_every_container_with_a_secret_checks_for_placeholders_at_start():
    services = _config()["services"]
    text = (REPO / "docker" / "airflow.Dockerfile").read_text()
    assert 'ENTRYPOINT ["/usr/bin/dumb-init", "--", "/usr/local/bin/opencity-refuse-placeholders"' \
        ', "/entrypoint"]' in text
    assert "opencity-refuse-placeholders" in (REPO / "docker" / "ckan.Dockerfile").read_text()
    for name in AIRFLOW:  # the image's entrypoint, not replaced by compose
        assert "entrypoint" not in services[name], name
    for name in ("airflow-db", "opencity-state-db", "ckan-db", "minio", "minio-init"):
        svc = services[name]
        assert svc["entrypoint"][0] == "/opencity/refuse-placeholders", name
        mounts = [v["source"] if isinstance(v, dict) else v.split(":")[0]
                  for v in svc["volumes"]]
        assert any(str(m).endswith("docker/refuse-placeholders") for m in mounts), name
        if name.endswith("-db"):  # an entrypoint set in compose resets the image's command
            assert svc["command"] == ["postgres"], name


def _refuse(env: dict[str, str], *command: str, secrets: Path | None = None):
    script = (REPO / "docker" / "refuse-placeholders").read_text()
    if secrets is not None:
        script = script.replace("/run/secrets/", f"{secrets}/")
    return subprocess.run(["sh", "-c", script, "refuse-placeholders", *command],
                          env={"PATH": "/usr/bin:/bin", **env}, capture_output=True,
                          text=True, timeout=30, check=False)


def test_placeholders_are_refused_by_name_never_by_value(tmp_path):
    values = _env_values()
    proc = _refuse(values, "echo", "started")
    assert proc.returncode == 78 and "started" not in proc.stdout
    for name in ("AIRFLOW_DB_PASSWORD", "MINIO_ROOT_PASSWORD", "MINIO_TASKS_PASSWORD"):
        assert name in proc.stderr
    assert "change-me-minio" not in proc.stderr.replace("change-me placeholder", "")
    assert "AIRFLOW_ADMIN_USER" not in proc.stderr  # a real value is not named

    good = {k: ("x" + v.replace("change-me", "s3cr3t") if "change-me" in v else v)
            for k, v in values.items()}
    proc = _refuse(good, "echo", "started")
    assert proc.returncode == 0 and proc.stdout.strip() == "started", proc.stderr
    # a placeholder in a secret file (the connections file) is refused by the file's name
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "opencity_connections").write_text(
        (REPO / "docker" / "connections.json.example").read_text())
    proc = _refuse(good, "echo", "started", secrets=secrets)
    assert proc.returncode == 78 and "secret:opencity_connections" in proc.stderr
    assert "change-me-to-a-long-random-key" not in proc.stderr
