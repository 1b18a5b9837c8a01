"""The approval gate as an Airflow task group, for DAG files: one call and two arrows.

    from opencity.review.airflow import approval_gate

    gate = approval_gate(("opencity-311-requests-weekly", "opencity-311-requests-microdata"))
    [committed, staged_md] >> gate >> [published, published_md]

Inside the group::

    check ──(branch)──> wait (ApprovalOperator) ──> approved ──┐
          └───────────> preapproved ──────────────────────────┴──> record ──> (publish tasks)

* ``check`` opens a request (and renders the release report) for every dataset whose current
  policy version no privacy officer approved yet; when there is none it takes the
  ``preapproved`` branch and the run publishes without waiting.
* ``wait`` is Airflow's own human-in-the-loop ``ApprovalOperator``: in Airflow 3.3 the task
  sits in ``awaiting_input`` without holding a worker slot until someone answers in the UI
  (Browse -> Required actions) or through the REST API; the request's body summarises the
  release report and links to it. An optional ``comment`` field is recorded with the decision.
* ``record`` (trigger rule ``none_failed``: it also runs after a rejection, which skips
  ``approved``) writes the decision to the review records and the catalog; on a rejection it
  discards the staged outputs and skips itself, so every publish task after it is skipped.

Parsing a DAG that calls this imports only Airflow; the task bodies live in
:mod:`opencity.review.gate`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta


def approval_gate(datasets: Sequence[str] | str, *, group_id: str = "approval",
                  response_timeout: timedelta | None = None):
    """A TaskGroup gating the publication of ``datasets`` on a privacy officer's approval.

    Args:
        datasets: catalog name(s) of the datasets the following publish tasks release.
        group_id: task group id (unique within the DAG).
        response_timeout: how long to wait for an answer before the task fails (None: wait).
    """
    from airflow.providers.standard.operators.empty import EmptyOperator
    from airflow.providers.standard.operators.hitl import ApprovalOperator
    from airflow.sdk import Param, TaskGroup, task

    names = (datasets,) if isinstance(datasets, str) else tuple(datasets)
    with TaskGroup(group_id=group_id, tooltip="privacy officer's approval") as group:

        @task.branch(task_id="check")
        def check() -> str:
            from airflow.sdk import get_current_context

            from opencity.airflow_context import data_interval, run_settings
            from opencity.review import gate

            ctx = get_current_context()
            checked = gate.check(run_settings(), names, data_interval()[0],
                                 dag_id=ctx["dag"].dag_id, run_id=ctx["run_id"])
            ti = ctx["ti"]
            ti.xcom_push(key="checked", value=checked)
            ti.xcom_push(key="subject", value=checked["subject"])
            ti.xcom_push(key="body", value=checked["body"])
            return f"{group_id}.wait" if checked["pending"] else f"{group_id}.preapproved"

        pull = f"ti.xcom_pull(task_ids='{group_id}.check', key='%s')"
        wait = ApprovalOperator(
            task_id="wait",
            subject="{{ " + pull % "subject" + " }}",
            body="{{ " + pull % "body" + " }}",
            params={"comment": Param("", type="string", title="Comment",
                                     description="Why you approve or reject (recorded)")},
            response_timeout=response_timeout,
        )
        approved = EmptyOperator(task_id="approved")
        preapproved = EmptyOperator(task_id="preapproved")

        @task(task_id="record", trigger_rule="none_failed")
        def record() -> dict:
            from airflow.sdk import get_current_context
            from airflow.sdk.exceptions import AirflowSkipException

            from opencity.airflow_context import data_interval, run_settings
            from opencity.review import gate

            ti = get_current_context()["ti"]
            checked = ti.xcom_pull(task_ids=f"{group_id}.check", key="checked")
            response = ti.xcom_pull(task_ids=f"{group_id}.wait") if checked["pending"] else None
            result = gate.record(run_settings(), checked, _plain(response), data_interval()[0])
            if not result["published"]:
                raise AirflowSkipException(
                    f"rejected by {result['by']}: nothing published, staged files discarded")
            return result

        c = check()
        c >> [wait, preapproved]
        r = record()
        wait >> approved >> r
        preapproved >> r
    return group


def _plain(response):
    """The ApprovalOperator's XCom (a TypedDict, datetimes inside) as plain JSON values."""
    if response is None:
        return None
    out = dict(response)
    if out.get("responded_at") is not None and hasattr(out["responded_at"], "isoformat"):
        out["responded_at"] = out["responded_at"].isoformat()
    return out
