"""Helpers DAG files share to read a task's run settings and data interval.

Light on purpose (imported when a DAG file is parsed): nothing here touches a database, the
network or a Variable at import time.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

# DAG params every OpenCity DAG accepts (None = fall back to OPENCITY_* or the default).
SETTINGS_PARAMS: dict[str, Any] = {
    "run_dir": None, "raw_dir": None, "publish_target": None, "ckan_url": None,
}


def run_settings():
    """Settings of the running task: DAG params, then OPENCITY_* variables, then defaults."""
    from airflow.sdk import get_current_context

    from opencity.settings import Settings

    params = get_current_context()["params"]
    return Settings.resolve({k: params.get(k) for k in SETTINGS_PARAMS})


def data_interval() -> tuple[datetime, datetime]:
    """The running task's data interval [start, end), tz-aware."""
    from airflow.sdk import get_current_context

    ctx = get_current_context()
    return ctx["data_interval_start"], ctx["data_interval_end"]
