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
            "ckan-db", "solr", "ckan-redis", "ckan"}


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
