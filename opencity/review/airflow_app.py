"""The release report, one click from the approval request, served by Airflow's API server.

OpenCity's Airflow plugin (:class:`opencity.timetables.OpenCityPlugin`) mounts :func:`app`
under :data:`URL_PREFIX`; the API server serves it behind Airflow's own login (the UI's
session cookie or a bearer token, checked by Airflow's auth manager for read access to the
DAG's human-in-the-loop requests). The approval request (opencity.review.airflow) links to

    <api base url>/opencity/report/<dag_id>/<run_id>/<dataset>

and the route reads the report the run's ``approval.check`` task rendered, wherever the run
directory is: a path on a shared volume or an object-storage URL (s3://...). The location
comes from that task's XCom, never from the request, so the link cannot be turned into a
file reader. Works on any worker layout: the officer needs no access to the workers' disks.
"""

from __future__ import annotations

from functools import cache
from typing import Any
from urllib.parse import quote

URL_PREFIX = "/opencity"
CHECK_TASK = "approval.check"  # the gate's task whose "checked" XCom names the reports


def report_path(dag_id: str, run_id: str, dataset: str) -> str:
    """The link's path (below the API server's base URL)."""
    return (f"{URL_PREFIX}/report/{quote(dag_id, safe='')}/{quote(run_id, safe='')}/"
            f"{quote(dataset, safe='')}")


def report_link(dag_id: str, run_id: str, dataset: str) -> str:
    """Absolute link when ``[api] base_url`` is set, else a path the UI resolves itself."""
    try:
        from airflow.configuration import conf

        base = (conf.get("api", "base_url", fallback="") or "").rstrip("/")
    except Exception:  # noqa: BLE001 - no Airflow configuration: a relative link still works
        base = ""
    return base + report_path(dag_id, run_id, dataset)


def read_report(location: str) -> bytes:
    """The report's bytes from a local path or an object-storage URL."""
    from opencity.runstore import _fs, is_remote

    if is_remote(location):
        fs, path = _fs(location)
        return fs.cat_file(path)
    from pathlib import Path

    return Path(location).read_bytes()


def _checked(dag_id: str, run_id: str) -> dict[str, Any] | None:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = session.execute(XComModel.get_many(
            run_id=run_id, key="checked", task_ids=CHECK_TASK, dag_ids=dag_id, limit=1)
            .with_only_columns(XComModel.value)).first()
    if row is None:
        return None
    value = XComModel.deserialize_value(row)
    return value if isinstance(value, dict) else None


@cache
def app():
    """The FastAPI sub-application (built on first use: the API server only)."""
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
    from airflow.api_fastapi.core_api.security import requires_access_dag
    from fastapi import Depends, FastAPI, HTTPException
    from fastapi.responses import HTMLResponse

    api = FastAPI(title="OpenCity release reports", docs_url=None, redoc_url=None,
                  openapi_url=None)

    @api.get("/report/{dag_id}/{run_id}/{dataset}", response_class=HTMLResponse,
             dependencies=[Depends(requires_access_dag("GET", DagAccessEntity.HITL_DETAIL))])
    def report(dag_id: str, run_id: str, dataset: str) -> HTMLResponse:
        checked = _checked(dag_id, run_id)
        if checked is None:
            raise HTTPException(404, f"run {run_id} of {dag_id} opened no approval request")
        location = (checked.get("reports") or {}).get(dataset)
        if not location:
            raise HTTPException(404, f"no release report of {dataset} in run {run_id}; the "
                                     "approval request says why it was not rendered")
        try:
            body = read_report(location)
        except (OSError, ValueError) as err:
            raise HTTPException(404, f"the release report of {dataset} in run {run_id} is "
                                     f"gone ({type(err).__name__}); rerun approval.check "
                                     "to render it again") from None
        return HTMLResponse(body, headers={"Cache-Control": "no-store",
                                           "X-Content-Type-Options": "nosniff"})

    return api


class LazyApps:
    """``OpenCityPlugin.fastapi_apps``: built when Airflow's API server asks for them, so
    parsing a DAG (which imports the plugin's module) does not import FastAPI."""

    def __get__(self, obj, owner) -> list[dict[str, Any]]:
        return [{"app": app(), "url_prefix": URL_PREFIX, "name": "OpenCity release reports"}]
