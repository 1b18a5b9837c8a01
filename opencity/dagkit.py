"""DAG wiring from one place: dataset names, Assets, typed params, default args, the task
decorator that maps OpenCity errors onto Airflow's retry/fail semantics, and the alerts.

Every release DAG comes from :func:`release_dag` (product specifications, opencity.release),
the ingest DAGs from :func:`dag_kwargs` and :func:`pipeline_task`, so a change here (a retry
policy, a new param, a notifier, an approval step before publishing) is one edit for every
DAG.

Light on purpose: this module is imported when a DAG file is parsed, so nothing here touches
a database, the network, a Connection or a Variable at import time; reading environment
variables (retry tuning) is the only parse-time input.

Errors and retries:
    * ``PipelineError`` with ``transient=True`` (a flaky portal, storage that did not answer):
      re-raised, so Airflow retries it with exponential backoff (``retries`` below).
    * ``PipelineError`` with ``transient=False`` (bad input, a failed release check, an
      exhausted budget): raised as ``AirflowFailException``, so the task fails at once and
      the run fails; retrying would give the same answer.
    * Any other exception (a bug, an OS error): Airflow's default, i.e. retried.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import Asset, Param, task

from opencity.errors import ConfigError, PipelineError

log = logging.getLogger(__name__)

# --- Datasets and Assets: one name per product, shared by producers and consumers ----------
DATASETS: dict[str, str] = {
    "311_weekly": "opencity-311-requests-weekly",
    "311_microdata": "opencity-311-requests-microdata",
    "cdr_mobility": "opencity-cdr-mobility-daily",
    "kpis": "opencity-kpis",
}


def asset(key: str) -> Asset:
    """The Asset of a product (``opencity://outputs/<dataset>``), by its DATASETS key."""
    return Asset(f"opencity://outputs/{DATASETS[key]}")


# --- Params ------------------------------------------------------------------------------
# Privacy floors until the stored release policy (privacy/policy.yaml) is wired in: a trigger
# may only tighten them (a larger k, a smaller epsilon), never loosen them.
def policy_floors(names: tuple[str, ...] | None = None) -> dict[str, Any]:
    """The trigger form's bounds, from the stored release policy (privacy/policy.yaml, a file
    in the repository or OPENCITY_POLICY: no database or network at parse time). A param may
    only tighten: k, l and the suppression threshold at least the policy's, epsilon, delta
    and the suppression limit at most. Only the datasets of ``names`` (default: all) must be
    in the policy: a city without CDRs has no mobility entry."""
    from privacy.policy import load_policy

    policy = load_policy()
    want = set(names) if names is not None else {"suppression_k", "microdata_k", "epsilon"}
    out: dict[str, Any] = {}
    # A city's policy may leave a product out (no microdata, no CDR): the DAG still parses;
    # that product is not produced (its run-time policy lookup says so) and its params are
    # moot (generic bounds).
    if want & {"suppression_k"}:
        out["suppression_k"] = policy.dataset("opencity-311-requests-weekly").threshold or 15
    if want & {"microdata_k", "microdata_l", "microdata_max_suppression"}:
        micro = policy.datasets.get("opencity-311-requests-microdata")
        out.update(microdata_k=micro.k if micro else 2, microdata_l=micro.l if micro else 1,
                   microdata_max_suppression=micro.max_suppression if micro else 0.0)
    if want & {"epsilon", "delta"}:
        mobility = policy.datasets.get("opencity-cdr-mobility-daily")
        out.update(epsilon=mobility.budget.epsilon if mobility else 1.0,
                   delta=mobility.budget.delta if mobility else 0.0)
    return out

_NULLABLE_STR = ["null", "string"]


def settings_params() -> dict[str, Param]:
    """Params every OpenCity DAG accepts (None = fall back to OPENCITY_* or the default)."""
    return {
        "run_dir": Param(None, type=_NULLABLE_STR, title="Run directory",
                         description="Where outputs, manifests and the local catalog go: a "
                                     "path, or an object-storage URL (s3://bucket/prefix) "
                                     "when the workers share no disk. Empty: "
                                     "OPENCITY_RUN_DIR, else $AIRFLOW_HOME/opencity."),
        "raw_dir": Param(None, type=_NULLABLE_STR, title="Raw landing area",
                         description="Where the landed raw files are read from. Empty: "
                                     "OPENCITY_RAW_DIR, else <run_dir>/raw."),
        "publish_target": Param(None, type=["null", "string"], enum=[None, "local", "ckan"],
                                title="Publish target",
                                description="'local' (the run directory's catalog) or 'ckan'. "
                                            "Empty: OPENCITY_PUBLISH_TARGET, else local."),
        "ckan_url": Param(None, type=_NULLABLE_STR, title="CKAN URL",
                          description="CKAN base URL when publishing to CKAN. Empty: "
                                      "OPENCITY_CKAN_URL. The API token comes from the "
                                      "'opencity_ckan' connection, never from a param."),
    }


def privacy_params(*names: str) -> dict[str, Param]:
    """Typed privacy params; every bound is the policy floor, so a trigger can only tighten."""
    # placeholders for the params not asked for (their entries are dropped below)
    f = {"suppression_k": 15, "microdata_k": 5, "microdata_l": 2,
         "microdata_max_suppression": 0.05, "epsilon": 1.0, "delta": 0.0}
    if names:
        f.update(policy_floors(tuple(names)))
    catalog = {
        "suppression_k": Param(
            None, type=["null", "integer"], minimum=f["suppression_k"], maximum=10_000,
            title="Suppression threshold (k)",
            description="Withhold a count backed by fewer than k distinct requesters. Empty: "
                        f"the policy's {f['suppression_k']}; only larger values are allowed."),
        "microdata_k": Param(
            None, type=["null", "integer"], minimum=f["microdata_k"], maximum=1_000,
            title="Microdata k-anonymity k",
            description="Every released quasi-identifier combination is shared by at least k "
                        f"records. Empty: the policy's {f['microdata_k']}; only larger."),
        "microdata_l": Param(
            None, type=["null", "integer"], minimum=f["microdata_l"], maximum=50,
            title="Microdata l-diversity l",
            description="Distinct request types in every class. Empty: the policy's "
                        f"{f['microdata_l']}; only larger."),
        "microdata_max_suppression": Param(
            None, type=["null", "number"], minimum=0, maximum=f["microdata_max_suppression"],
            title="Microdata suppression limit",
            description="Share of records that may be removed, in [0, "
                        f"{f['microdata_max_suppression']}]. Empty: the policy's limit."),
        "epsilon": Param(
            f["epsilon"], type="number", exclusiveMinimum=0, maximum=f["epsilon"],
            title="Epsilon per subscriber per day",
            description="Differential-privacy budget of the day's release, per subscriber. "
                        f"At most the policy's {f['epsilon']}; smaller is more private."),
        "delta": Param(
            f["delta"], type="number", minimum=0, maximum=f["delta"],
            title="Delta per subscriber per day",
            description=f"At most the policy's {f['delta']}."),
    }
    unknown = set(names) - set(catalog)
    if unknown:
        raise ConfigError(f"unknown privacy param(s) {sorted(unknown)}; known: {sorted(catalog)}")
    return {n: catalog[n] for n in names}


def check_conf_keys(conf: Mapping[str, Any] | None, allowed) -> None:
    """Reject run conf keys the DAG does not declare (a typo would otherwise be ignored).

    Airflow 3.3 validates the type and bounds of declared params when a run is created
    (the REST API answers 400), but merges undeclared conf keys in silently
    (``SerializedParamsDict.deep_merge``); this check makes every task of such a run fail
    at once, before it reads anything.
    """
    unknown = sorted(set(conf or {}) - set(allowed))
    if unknown:
        raise ConfigError(f"unknown DAG param(s) {unknown} in the run conf; this DAG accepts "
                          f"{sorted(allowed)}. Trigger again without them.")


# --- Retries, timeouts, alerts -------------------------------------------------------------
def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    try:
        return float(raw) if raw not in (None, "") else default
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds/count, got {raw!r}") from None


def default_args(task_timeout: timedelta = timedelta(minutes=30)) -> dict[str, Any]:
    """Retries with exponential backoff, a per-task timeout and the failure notifier.

    ``OPENCITY_TASK_RETRIES`` (default 3) and ``OPENCITY_RETRY_DELAY_SECONDS`` (default 60,
    doubled on every retry up to 30 min) tune them per deployment (tests set them low).
    """
    return {
        "owner": "opencity-data-stewards",
        "retries": int(_env_float("OPENCITY_TASK_RETRIES", 3)),
        "retry_delay": timedelta(seconds=_env_float("OPENCITY_RETRY_DELAY_SECONDS", 60)),
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": timedelta(minutes=30),
        "execution_timeout": task_timeout,
        "on_failure_callback": notify_failure,
    }


def max_active_runs() -> int:
    """Runs of one DAG at once (``OPENCITY_MAX_ACTIVE_RUNS``, default 3): catch-up after an
    outage proceeds in bounded batches, and a run waiting days for an officer's approval
    does not hold back the intervals after it."""
    n = int(_env_float("OPENCITY_MAX_ACTIVE_RUNS", 3))
    if n < 1:
        raise ConfigError(f"OPENCITY_MAX_ACTIVE_RUNS must be at least 1, got {n}")
    return n


ALERT_CONN_ENV = "OPENCITY_ALERT_CONN_ID"
DEFAULT_ALERT_CONN = "opencity_alerts"


def _alert_url(conn) -> str:
    scheme = "https" if conn.conn_type == "https" or (conn.extra_dejson or {}).get(
        "use_https") else "http"
    port = f":{conn.port}" if conn.port else ""
    path = (conn.schema or "").lstrip("/")
    return f"{scheme}://{conn.host}{port}/{path}"


def send_alert(payload: dict[str, Any], conn_id: str | None = None) -> bool:
    """POST ``payload`` as JSON to the alert webhook connection; False when none is set.

    The connection (id from ``OPENCITY_ALERT_CONN_ID``, default ``opencity_alerts``) is an
    HTTP(S) connection, e.g. ``AIRFLOW_CONN_OPENCITY_ALERTS=https://hooks.example.org/ops``
    (host, port, path). A notifier that cannot deliver logs why and never fails the task.
    """
    import urllib.request

    from airflow.sdk import Connection

    conn_id = conn_id or os.environ.get(ALERT_CONN_ENV) or DEFAULT_ALERT_CONN
    try:
        conn = Connection.get(conn_id)
    except Exception:  # noqa: BLE001 - "not defined" has several types across Airflow versions
        log.warning("no alert sent: connection %r is not defined (set it or %s)",
                    conn_id, ALERT_CONN_ENV)
        return False
    if conn.conn_type not in ("http", "https"):
        log.warning("no alert sent: connection %r is of type %r; use an http(s) webhook",
                    conn_id, conn.conn_type)
        return False
    req = urllib.request.Request(
        _alert_url(conn), data=json.dumps(payload, default=str).encode(), method="POST",
        headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            resp.read()
        return True
    except OSError as err:
        log.warning("alert to connection %r failed: %s", conn_id, err)
        return False


def notify_failure(context: Mapping[str, Any]) -> None:
    """``on_failure_callback``: tell the stewards which task of which partition failed.

    The payload names the DAG, task, run, partition, try and the error class and message
    (OpenCity messages never carry row content or identifiers); nothing else.
    """
    ti = context.get("ti") or context.get("task_instance")
    start = context.get("data_interval_start")
    err = context.get("exception")
    payload = {
        "event": "task_failed",
        "dag_id": getattr(ti, "dag_id", None),
        "task_id": getattr(ti, "task_id", None),
        "run_id": context.get("run_id"),
        "partition": f"dt={start:%Y-%m-%d}" if start else None,
        "try_number": getattr(ti, "try_number", None),
        "error": type(err).__name__ if err else None,
        "message": str(err)[:2000] if err else None,
    }
    send_alert(payload)


def notify_deadline(context: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
    """Deadline-alert callback: a run is still not finished long after it was queued."""
    dag_run = (context or {}).get("dag_run") or {}
    send_alert({"event": "deadline_missed", **kwargs,
                "run_id": getattr(dag_run, "run_id", None) if dag_run else None})


def _deadline(after: timedelta):
    """A DeadlineAlert ``after`` the run was queued (Airflow >= 3.1), else None."""
    try:
        from airflow.sdk.definitions.callback import SyncCallback
        from airflow.sdk.definitions.deadline import DeadlineAlert, DeadlineReference
    except ImportError:  # pragma: no cover - older Airflow
        return None
    return DeadlineAlert(reference=DeadlineReference.DAGRUN_QUEUED_AT, interval=after,
                         callback=SyncCallback(notify_deadline,
                                               kwargs={"deadline_hours": after / timedelta(hours=1)}))


# --- The DAG and its tasks ------------------------------------------------------------------
STEWARD_FOOTER = """
### Running a given {period}

* **One {period}** (REST API, explicit data interval; the run id names the partition):
  ```
  curl -X POST "$AIRFLOW/api/v2/dags/{dag_id}/dagRuns" -H "Authorization: Bearer $TOKEN" \\
    -H 'Content-Type: application/json' -d '{{"dag_run_id": "manual__dt={example}",
    "logical_date": "{example}T00:00:00Z", "data_interval_start": "{example}T00:00:00Z",
    "data_interval_end": "{example_end}T00:00:00Z", "conf": {{}}}}'
  ```
  Do **not** use `airflow dags trigger --logical-date`: on this timetable it runs the interval
  of the trigger time, not of the date given.
* **A range** (every interval from FROM to TO, in parallel):
  `airflow backfill create --dag-id {dag_id} --from-date FROM --to-date TO`
  (add `--reprocess-behavior completed` to redo intervals that already succeeded).
* **One task again**: `airflow tasks clear {dag_id} -t TASK_ID -s DAY -e DAY -y`, with DAY
  the interval's start (`{example}`) and TASK_ID the task's full id (e.g. `approval.check`).
  Airflow 3.3 matches `-t` as a plain substring (no regex: `'^task$'` matches nothing) and
  OpenCity's task ids are chosen so that no id is part of another: `-t` selects one task.
  Every task can be rerun alone and gives the same result. A step that stages output for a
  later step (`aggregate`, `anonymize_microdata`, `compute`, `dashboard`, `release`) only
  takes effect with the steps after it: add `-d` (downstream). Staged leftovers of a
  partition are removed by the next run of the interval and by its publish step.
* An interval with no input rows fails at `ingest` with "no input rows" and publishes nothing.

Params are typed (wrong types, out-of-bounds values and unknown keys are refused); privacy
params can only be tightened from the policy. Failures are retried when transient (a portal
that did not answer) and alert the `opencity_alerts` connection when final.

**Who to ask:** the OpenCity data-steward team (DAG owner `opencity-data-stewards`); privacy
questions go to the city's data-protection officer.
"""


def dag_kwargs(dag_id: str, *, schedule, start_date: datetime, doc_md: str, period: str,
               example: str, example_end: str, privacy: tuple[str, ...] = (),
               tags: tuple[str, ...] = (),
               run_timeout: timedelta = timedelta(hours=6) + timedelta(days=3),
               task_timeout: timedelta = timedelta(minutes=30)) -> dict[str, Any]:
    """Keyword arguments for ``@dag`` shared by every OpenCity DAG.

    The run timeout covers the work (6 h) plus the longest wait for a privacy officer's
    approval (opencity.review.airflow.APPROVAL_WAIT, 3 days).
    """
    # Deadline alerts are opt-in: with Airflow 3.3.2, dag.test() of a DAG with a DeadlineAlert
    # fails inside SQLAlchemy ("'dict' object has no attribute 'hex'", the deadline row's id).
    deadline = (_deadline(run_timeout / 2)
                if os.environ.get("OPENCITY_DEADLINE_ALERTS", "").lower() in ("1", "true")
                else None)
    kwargs = {
        "dag_id": dag_id,
        "schedule": schedule,
        "start_date": start_date,
        # Every missed interval is scheduled (a scheduler outage loses no partition), a few
        # at a time: runs before the start date, of unfinished intervals or with no task fail
        # at once (opencity.airflow_listeners).
        "catchup": True,
        "max_active_runs": max_active_runs(),
        "dagrun_timeout": run_timeout,
        "default_args": default_args(task_timeout),
        "params": {**settings_params(), **privacy_params(*privacy)},
        "tags": ["opencity", *tags],
        "doc_md": doc_md.strip() + "\n" + STEWARD_FOOTER.format(
            period=period, dag_id=dag_id, example=example, example_end=example_end),
        "render_template_as_native_obj": True,
    }
    if deadline is not None:
        kwargs["deadline"] = deadline

    return kwargs


def check_shared_run_dir(run_dir: str, dag_id: str, run_id: str, first: bool) -> None:
    """Fail clearly when this worker does not see the run directory the run started in.

    Tasks hand each other paths inside the run directory, so every worker must mount the
    same run directory (a shared volume). The run's first task writes a marker
    ``<run_dir>/_runs/<dag_id>/<run_id>.json``; every later task checks it is there.
    """
    import re
    import socket
    from pathlib import Path

    safe = re.sub(r"[^A-Za-z0-9_.=+-]", "_", run_id)
    marker = Path(run_dir) / "_runs" / dag_id / f"{safe}.json"
    if first:
        try:
            from opencity.io import write_json_atomic

            write_json_atomic({"dag_id": dag_id, "run_id": run_id,
                               "started_on": socket.gethostname()}, marker, restricted=True,
                              indent=None)
        except OSError as err:
            raise ConfigError(f"cannot write to the run directory {run_dir} ({err}); check "
                              "that the shared run volume is mounted and writable") from err
        return
    if not marker.is_file():
        raise ConfigError(
            f"this worker ({socket.gethostname()}) does not see the run directory {run_dir} "
            f"that run {run_id} started in (missing {marker}). Every Celery worker must mount "
            "the same run directory (shared volume) at the same path; see README 'Production "
            "Airflow'.")


OUTPUTS_ASSET = "opencity://outputs/"


def output_datasets(tasks) -> list[str]:
    """Catalog names of the products these tasks declare as outlets (``asset(...)``)."""
    names = []
    for t in tasks:
        for a in getattr(t, "outlets", None) or ():
            uri = getattr(a, "uri", "") or ""
            if uri.startswith(OUTPUTS_ASSET) and uri[len(OUTPUTS_ASSET):] not in names:
                names.append(uri[len(OUTPUTS_ASSET):])
    return names


def clean_staged_leftovers(run_dir, datasets, partition: str) -> list[str]:
    """Remove what earlier tries left of ``partition`` beside its committed folder.

    Staging steps write ``outputs/<dataset>/.<partition>.staging/`` (and temporary names
    starting with ``.<partition>``) for a later step to move into ``<partition>/``. A staging
    step rerun without the steps after it leaves such a copy behind; the rerun that
    supersedes it (the run's first task, i.e. the interval again, or a publish step) removes
    it. Returns the removed names, ``<dataset>/<name>``.
    """
    import shutil
    from pathlib import Path

    removed = []
    for ds in datasets:
        base = Path(run_dir) / "outputs" / ds
        if not base.is_dir():
            continue
        for p in sorted(base.glob(f".{partition}*")):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            removed.append(f"{ds}/{p.name}")
    if removed:
        log.info("removed staged leftovers of earlier tries: %s", ", ".join(removed))
    return removed


def _fail_fast(err: PipelineError):
    from airflow.sdk.exceptions import AirflowFailException

    return AirflowFailException(f"{type(err).__name__}: {err}")


def pipeline_task(fn: Callable | None = None, **task_kwargs: Any):
    """``@task`` for OpenCity task bodies: checks the run conf, maps errors to retry/fail.

    Terminal ``PipelineError`` -> ``AirflowFailException`` (no retry); transient ones are
    re-raised so Airflow retries them with backoff.
    """

    def wrap(f: Callable):
        @functools.wraps(f)
        def inner(*args, **kwargs):
            from airflow.sdk import get_current_context

            from opencity.settings import partition_name

            try:
                ctx = get_current_context()
                check_conf_keys(getattr(ctx.get("dag_run"), "conf", None), ctx["dag"].params)
                from opencity.airflow_context import task_storage

                # A run directory on object storage: the body works in a scratch copy and
                # tasks exchange URIs (opencity.runstore); a local one is used as it is.
                first = not ctx["task"].upstream_task_ids
                start = ctx.get("data_interval_start")
                with task_storage() as sc:
                    check_shared_run_dir(sc.settings.run_dir, ctx["dag"].dag_id,
                                         ctx["run_id"], first=first)
                    if first and start is not None:  # the interval again: a fresh start
                        clean_staged_leftovers(sc.settings.run_dir,
                                               output_datasets(ctx["dag"].tasks),
                                               partition_name(start))
                    result = f(*sc.to_local(args), **sc.to_local(kwargs))
                    mine = output_datasets([ctx["task"]])
                    if mine and start is not None:  # published: what was staged is superseded
                        clean_staged_leftovers(sc.settings.run_dir, mine, partition_name(start))
                    from opencity.io import restrict_run_tree

                    # csv copies, reports, _runs markers: owner-only whatever the umask
                    restrict_run_tree(sc.settings.run_dir)
                    return sc.to_uris(result)
            except PipelineError as err:
                if err.transient:
                    log.warning("transient %s, Airflow will retry: %s", type(err).__name__, err)
                    raise
                raise _fail_fast(err) from err

        return task(**task_kwargs)(inner)

    return wrap(fn) if fn is not None else wrap


# --- Release DAGs from product specifications ----------------------------------------------
def release_dag(*, dag_id: str, schedule, start_date: datetime, doc_md: str, period: str,
                example: str, example_end: str, ingest: Callable, products, manifest: Callable,
                privacy: tuple[str, ...] = (), tags: tuple[str, ...] = (),
                params: Mapping[str, Param] | None = None, inlets=None,
                fileloc: str | None = None):
    """One release DAG: ``ingest``, then for every product (opencity.release.ProductSpec)
    its stage task(s) -> commit -> the approval gate -> publish, then ``manifest``.

    Args:
        ingest: (settings, start, end) -> the ingest result (JSON-able dict).
        products: the ProductSpecs released from that input; independent of each other: with
            several, a failed product does not hold back the others, and the manifest (written
            for what got through) then fails the run naming it.
        manifest: (settings, dag_id, run_id, start, end, ingested, outcomes) -> manifest path;
            ``outcomes`` maps each dataset to an opencity.release.Outcome.
        params: extra typed Params (beside the settings and privacy ones).
        inlets: lineage inlets of the ingest task.
        fileloc: the DAG file (default: the file that calls this function).

    The task ids are the specs' (stage steps, ``commit_task``, ``publish_task``), which must
    not repeat; parsing imports only Airflow and this module's callers' specs.
    """
    from airflow.sdk import DAG, TriggerRule, get_current_context

    from opencity.review.airflow import approval_gate

    ids = [t for spec in products for t in spec.task_ids]
    if len(set(ids)) != len(ids) or {"ingest", "manifest"} & set(ids):
        raise ConfigError(f"release DAG {dag_id}: task ids repeat across products: {ids}")
    kwargs = dag_kwargs(dag_id, schedule=schedule, start_date=start_date, doc_md=doc_md,
                        period=period, example=example, example_end=example_end,
                        privacy=privacy, tags=tags)
    kwargs["params"].update(params or {})
    several = len(products) > 1

    def _ctx():
        from opencity.airflow_context import data_interval, run_settings

        start, end = data_interval()
        return run_settings(), start, end

    def _outlet(spec):
        if spec.outlet in DATASETS:
            return [asset(spec.outlet)]
        return [Asset(f"opencity://outputs/{spec.dataset}")]

    def stage_task(spec, step):
        @pipeline_task(task_id=step.task_id)
        def run_stage(ingested: dict, previous: dict | None = None) -> dict:
            from opencity.release import Staged

            settings, start, end = _ctx()
            return step.run(settings, ingested, Staged.from_xcom(previous), start,
                            end).to_xcom()
        return run_stage

    def commit_task(spec):
        @pipeline_task(task_id=spec.commit_task)
        def run_commit(staged: dict) -> dict:
            from opencity import release

            settings, start, _end = _ctx()
            return release.commit(spec, settings, release.Staged.from_xcom(staged),
                                  start).to_xcom()
        return run_commit

    def publish_task(spec):
        @pipeline_task(task_id=spec.publish_task, outlets=_outlet(spec))
        def run_publish(committed: dict, ingested: dict) -> dict:
            from opencity import release

            settings, start, end = _ctx()
            return release.publish(spec, settings, release.Committed.from_xcom(committed),
                                   start, end, get_current_context()["run_id"],
                                   ingested).to_xcom()
        return run_publish

    import sys

    caller = fileloc or sys._getframe(1).f_code.co_filename  # as if the DAG file built it
    with DAG(**kwargs) as dag:
        dag.fileloc = caller

        @pipeline_task(task_id="ingest", inlets=inlets or [])
        def run_ingest() -> dict:
            settings, start, end = _ctx()
            return ingest(settings, start, end)

        @pipeline_task(task_id="manifest",
                       trigger_rule=(TriggerRule.ALL_DONE_MIN_ONE_SUCCESS if several
                                     else TriggerRule.ALL_SUCCESS))
        def run_manifest(ingested: dict, parts: dict) -> str:
            from opencity import release

            settings, start, end = _ctx()
            ctx = get_current_context()
            outcomes = {ds: release.Outcome(release.Staged.from_xcom(p.get("staged")),
                                            release.Committed.from_xcom(p.get("committed")),
                                            release.Published.from_xcom(p.get("published")))
                        for ds, p in parts.items()}
            path = manifest(settings, ctx["dag"].dag_id, ctx["run_id"], start, end,
                            ingested, outcomes)
            release.raise_for_failed(outcomes, start, path)
            return path

        ingested = run_ingest()
        parts, commits, publishes = {}, [], []
        for spec in products:
            staged = None
            for step in spec.stages:
                staged = (stage_task(spec, step)(ingested) if staged is None
                          else stage_task(spec, step)(ingested, staged))
            committed = commit_task(spec)(staged)
            published = publish_task(spec)(committed, ingested)
            commits.append(committed)
            publishes.append(published)
            parts[spec.dataset] = {"staged": staged, "committed": committed,
                                   "published": published}
        # A privacy officer approves the first release and every new policy version.
        gate = approval_gate(tuple(spec.dataset for spec in products))
        commits >> gate >> publishes
        if several:
            # One product's failure does not hold back another: the gate opens once all
            # committed (or failed) with at least one committed; each publish task still
            # needs its own product.
            for t in gate.roots:
                t.trigger_rule = TriggerRule.ALL_DONE_MIN_ONE_SUCCESS
        run_manifest(ingested, parts)
    return dag
