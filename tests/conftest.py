"""Shared test set-up. Airflow reads its configuration at import, so the environment is set
here, at collection time, before any test module imports airflow."""

from __future__ import annotations

import os
import secrets
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "tests" / "data"

_AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="opencity-airflow-"))
os.environ.setdefault("AIRFLOW_HOME", str(_AIRFLOW_HOME))
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(REPO / "dags")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "True"
os.environ.setdefault("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
                      f"sqlite:///{Path(os.environ['AIRFLOW_HOME']) / 'airflow.db'}")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
# Retries stay on (opencity.dagkit) but short, so a test of a failing task does not wait.
os.environ.setdefault("OPENCITY_TASK_RETRIES", "1")
os.environ.setdefault("OPENCITY_RETRY_DELAY_SECONDS", "1")
# A per-session random pseudonymization key: tests never use a fixed secret.
os.environ.setdefault("OPENCITY_HMAC_KEY", secrets.token_hex(32))


@pytest.fixture(scope="session")
def airflow_db():
    """A fresh Airflow metadata DB (SQLite) for the session."""
    from airflow.utils import db

    db.resetdb()
    return Path(os.environ["AIRFLOW_HOME"])


@pytest.fixture(scope="session")
def sample_raw(tmp_path_factory) -> Path:
    """Sample data at a small scale, generated once per session (raw layout)."""
    from sample_data import generate

    out = tmp_path_factory.mktemp("sample") / "raw"
    generate(out, seed=7, scale=0.3, days=14, progress=False)
    return out
