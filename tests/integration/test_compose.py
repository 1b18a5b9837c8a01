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
