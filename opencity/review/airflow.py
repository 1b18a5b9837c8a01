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
* the answer is recorded by ``wait`` itself the moment it arrives (who, when, policy hash,
  comment; review records + release registry); a rejection discards the staged outputs there
  (Airflow keeps no return value of a task that skips its downstream tasks);
* ``record`` (trigger rule ``none_failed``: it also runs after a rejection, which skips
  ``approved``) notes the gate pass and the catalog's review file, or, when a dataset is not
  approved, fails (no retry), so the run is red in the grid and no publish task runs.
* When a request opens, its body links to the release report served by the Airflow API
  server (opencity.review.airflow_app, behind Airflow's login) and the officer is told
  through the alerts connection (event ``approval_requested``).

Parsing a DAG that calls this imports only Airflow; the task bodies live in
:mod:`opencity.review.gate`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from airflow.providers.standard.operators.hitl import ApprovalOperator

from opencity.errors import PipelineError


class ReviewApprovalOperator(ApprovalOperator):
    """Airflow's ApprovalOperator that records the answer in OpenCity's review records (and
    the release registry) as soon as it arrives, before approving or skipping what follows.

    Args:
        check_task_id: the task whose ``checked`` XCom describes the request.
    """

    def __init__(self, *, check_task_id: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.check_task_id = check_task_id

    def execute(self, context: Any) -> Any:
        # Only the privacy officer may answer: their Airflow user, registered with their key
        # in the state store (read now, at run time, never while parsing the DAG).
        from opencity.airflow_context import task_storage
        from opencity.review import gate

        with task_storage() as sc:
            self.assigned_users = gate.officer_users(sc.settings)
        return super().execute(context)

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        if "error" not in event:
            from opencity.airflow_context import data_interval, task_storage
            from opencity.review import gate

            checked = context["ti"].xcom_pull(task_ids=self.check_task_id, key="checked")
            with task_storage() as sc:
                gate.decide(sc.settings, sc.to_local(checked), _plain(event),
                            data_interval()[0])
        return super().execute_complete(context=context, event=event)


APPROVAL_WAIT = timedelta(days=3)  # how long a release waits for a privacy officer


def approval_gate(datasets: Sequence[str] | str, *, group_id: str = "approval",
                  response_timeout: timedelta | None = APPROVAL_WAIT):
    """A TaskGroup gating the publication of ``datasets`` on a privacy officer's approval.

    Args:
        datasets: catalog name(s) of the datasets the following publish tasks release.
        group_id: task group id (unique within the DAG).
        response_timeout: how long to wait for an answer before the task fails (Airflow 3.3
            waits in the triggerer, holding no worker). The DAG's run timeout must be longer
            (opencity.dagkit adds this wait to it).
    """
    from airflow.providers.standard.operators.empty import EmptyOperator
    from airflow.sdk import Param, TaskGroup, task

    names = (datasets,) if isinstance(datasets, str) else tuple(datasets)
    with TaskGroup(group_id=group_id, tooltip="privacy officer's approval") as group:

        @task.branch(task_id="check")
        def check() -> str:
            from airflow.sdk import get_current_context

            from opencity.airflow_context import data_interval, task_storage
            from opencity.review import gate

            ctx = get_current_context()
            try:
                with task_storage() as sc:
                    checked = sc.to_uris(gate.check(sc.settings, names, data_interval()[0],
                                                    dag_id=ctx["dag"].dag_id,
                                                    run_id=ctx["run_id"]))
            except PipelineError as err:
                if err.transient:
                    raise
                # Terminal (e.g. waiting for approval in command-line mode): a retry would
                # say the same, so fail at once, once (issue 23).
                from airflow.sdk.exceptions import AirflowFailException

                raise AirflowFailException(f"{type(err).__name__}: {err}") from err
            if checked["pending"]:
                links = report_links(ctx["dag"].dag_id, ctx["run_id"], checked)
                checked["subject"], checked["body"] = gate.request_text(checked, links)
                notify_request_opened(checked, links)
            ti = ctx["ti"]
            ti.xcom_push(key="checked", value=checked)
            ti.xcom_push(key="subject", value=checked["subject"])
            ti.xcom_push(key="body", value=checked["body"])
            return f"{group_id}.wait" if checked["pending"] else f"{group_id}.preapproved"

        pull = f"ti.xcom_pull(task_ids='{group_id}.check', key='%s')"
        wait = ReviewApprovalOperator(
            task_id="wait",
            check_task_id=f"{group_id}.check",
            subject="{{ " + pull % "subject" + " }}",
            body="{{ " + pull % "body" + " }}",
            params={"comment": Param("", type="string", title="Comment",
                                     description="Why you approve or reject (recorded)")},
            response_timeout=response_timeout,
            # The execution part only (3.3+ keeps it separate from the human wait); without
            # it the HITL operator would turn the DAG's 30-minute task timeout into the wait.
            execution_timeout=timedelta(minutes=30),
        )
        approved = EmptyOperator(task_id="approved")
        preapproved = EmptyOperator(task_id="preapproved")

        @task(task_id="record", trigger_rule="none_failed")
        def record() -> dict:
            from airflow.sdk import get_current_context
            from airflow.sdk.exceptions import AirflowFailException

            from opencity.airflow_context import task_storage
            from opencity.review import gate

            ti = get_current_context()["ti"]
            checked = ti.xcom_pull(task_ids=f"{group_id}.check", key="checked")
            with task_storage() as sc:
                result = sc.to_uris(gate.record(sc.settings, sc.to_local(checked)))
            if not result["published"]:
                # Red in the grid: the run fails here and its publish tasks never run.
                raise AirflowFailException(
                    f"release rejected by the privacy officer ({result['by']}): nothing "
                    "published, staged files discarded; a rerun asks for approval again")
            return result

        c = check()
        c >> [wait, preapproved]
        r = record()
        wait >> approved >> r
        preapproved >> r
    return group


def report_links(dag_id: str, run_id: str, checked: dict[str, Any]) -> dict[str, str]:
    """Dataset -> the report page of the Airflow API server (opencity.review.airflow_app)."""
    from opencity.review.airflow_app import report_link

    return {ds: report_link(dag_id, run_id, ds) for ds in checked.get("reports") or {}}


def notify_request_opened(checked: dict[str, Any], links: dict[str, str]) -> bool:
    """Tell the privacy officer a request opened: event ``approval_requested`` to the alerts
    connection (opencity.dagkit.send_alert). Names the DAG, run, partition, datasets, policy
    versions and report links; no row content, no personal data."""
    from opencity.dagkit import send_alert

    return send_alert({
        "event": "approval_requested",
        "dag_id": checked.get("dag_id"),
        "run_id": checked.get("run_id"),
        "partition": checked.get("partition"),
        "datasets": list(checked.get("pending") or []),
        "policy": {ds: checked["policy"][ds] for ds in checked.get("pending") or []},
        "reports": links,
        "message": checked.get("subject"),
    })


def _plain(response):
    """The HITL answer (datetimes and models inside) as plain JSON values."""
    if response is None:
        return None
    out = dict(response)
    if out.get("responded_at") is not None and hasattr(out["responded_at"], "isoformat"):
        out["responded_at"] = out["responded_at"].isoformat()
    user = out.get("responded_by_user")
    if user is not None and not isinstance(user, dict):
        out["responded_by_user"] = (user.model_dump() if hasattr(user, "model_dump")
                                    else {"name": str(user)})
    return out
