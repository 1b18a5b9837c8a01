"""Helpers DAG files share to read a task's run settings and data interval.

Light on purpose (imported when a DAG file is parsed): nothing here touches a database, the
network or a Variable at import time.
"""

from __future__ import annotations

from datetime import datetime

# DAG params that are Settings fields (None = fall back to OPENCITY_* or the default). The
# privacy ones only exist on the DAGs that declare them (opencity.dagkit.privacy_params).
SETTINGS_KEYS = ("run_dir", "raw_dir", "publish_target", "ckan_url", "suppression_k",
                 "microdata_k", "microdata_l", "microdata_max_suppression")
SETTINGS_PARAMS = {k: None for k in SETTINGS_KEYS[:4]}  # kept for callers of the old name


def run_settings():
    """Settings of the running task: DAG params, then OPENCITY_* variables, then defaults."""
    from airflow.sdk import get_current_context

    from opencity.settings import Settings

    params = get_current_context()["params"]
    return Settings.resolve({k: params.get(k) for k in SETTINGS_KEYS if k in params})


def data_interval() -> tuple[datetime, datetime]:
    """The running task's data interval [start, end), tz-aware."""
    from airflow.sdk import get_current_context

    ctx = get_current_context()
    return ctx["data_interval_start"], ctx["data_interval_end"]
