"""Shared test set-up. Airflow reads its configuration at import, so the environment is set
here, at collection time, before any test module imports airflow."""

from __future__ import annotations

import os
import secrets
import tempfile
from pathlib import Path

import pytest
from hypothesis import settings as hypothesis_settings

# DuckDB-backed properties: the first query of a process (extension load, catalog) takes longer
# than Hypothesis' 200 ms default deadline, which made them flaky when run alone.
hypothesis_settings.register_profile("opencity", deadline=None)
hypothesis_settings.load_profile("opencity")

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


# -- No silent green: every skip is listed, and under OPENCITY_STRICT_SKIPS=1 (scripts/test, CI)
# a skip whose reason is not documented below fails the run. -------------------------------
DOCUMENTED_SKIPS: dict[str, str] = {
    # "reason substring": "why this skip is acceptable in CI",
}
_SKIPPED: list[tuple[str, str]] = []


def pytest_runtest_logreport(report):
    if report.skipped and not hasattr(report, "wasxfail"):
        longrepr = report.longrepr
        reason = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(
            longrepr)
        _SKIPPED.append((report.nodeid, reason))


def _undocumented() -> list[tuple[str, str]]:
    return [(node, reason) for node, reason in _SKIPPED
            if not any(key in reason for key in DOCUMENTED_SKIPS)]


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not _SKIPPED:
        terminalreporter.write_line("skips: 0")
        return
    terminalreporter.section("skipped tests")
    for node, reason in _SKIPPED:
        documented = any(key in reason for key in DOCUMENTED_SKIPS)
        terminalreporter.write_line(
            f"{'documented' if documented else 'UNDOCUMENTED'} skip: {node}: {reason}")
    if os.environ.get("OPENCITY_STRICT_SKIPS") == "1" and _undocumented():
        terminalreporter.write_line(
            f"{len(_undocumented())} undocumented skip(s) with OPENCITY_STRICT_SKIPS=1: the run "
            "fails (install the missing tool, or document the skip in tests/conftest.py)")


def pytest_sessionfinish(session, exitstatus):
    if os.environ.get("OPENCITY_STRICT_SKIPS") == "1" and _undocumented() and exitstatus == 0:
        session.exitstatus = 1
