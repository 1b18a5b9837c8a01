"""Helpers DAG files share to read a task's run settings and data interval.

Light on purpose (imported when a DAG file is parsed): nothing here touches a database, the
network or a Variable at import time.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from datetime import datetime
from typing import Any

# DAG params that are Settings fields (None = fall back to OPENCITY_* or the default). The
# privacy ones only exist on the DAGs that declare them (opencity.dagkit.privacy_params).
SETTINGS_KEYS = ("run_dir", "raw_dir", "publish_target", "ckan_url", "suppression_k",
                 "microdata_k", "microdata_l", "microdata_max_suppression")
SETTINGS_PARAMS = {k: None for k in SETTINGS_KEYS[:4]}  # kept for callers of the old name


# The running task's scratch copy of a run directory on object storage (task_storage).
_SCRATCH: ContextVar[Any] = ContextVar("opencity_task_scratch", default=None)


def run_settings():
    """Settings of the running task: DAG params, then OPENCITY_* variables, then defaults.

    Inside :func:`task_storage` with a run directory on object storage, the settings of the
    task's local scratch copy (opencity.runstore)."""
    staged = _SCRATCH.get()
    if staged is not None:
        return staged.settings
    from airflow.sdk import get_current_context

    from opencity.settings import Settings

    params = get_current_context()["params"]
    return Settings.resolve({k: params.get(k) for k in SETTINGS_KEYS if k in params})


def data_interval() -> tuple[datetime, datetime]:
    """The running task's data interval [start, end), tz-aware."""
    from airflow.sdk import get_current_context

    ctx = get_current_context()
    return ctx["data_interval_start"], ctx["data_interval_end"]


@contextlib.contextmanager
def task_storage() -> Iterator[Any]:
    """The running task's run directory (opencity.runstore.scratch): the run's settings as
    they are for a local run directory; for one on object storage a scratch copy pulled
    before the body, pushed back after it succeeds, always removed. Yields the
    :class:`opencity.runstore.Scratch` (``settings``, ``to_local``, ``to_uris``)."""
    current = _SCRATCH.get()
    if current is not None:  # nested (a task body calling another wrapped helper)
        yield current
        return
    from opencity.runstore import scratch

    with scratch(run_settings()) as sc:
        token = _SCRATCH.set(sc)
        try:
            yield sc
        finally:
            _SCRATCH.reset(token)
