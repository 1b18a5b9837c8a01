"""
## CDR mobility, daily (`cdr_mobility`)

**Publishes** `opencity-cdr-mobility-daily`: differentially private mobility products of one
day (00:00 to 00:00 UTC) from call detail records, with their `privacy.json` statement.
Subscribers are pseudonymized at ingest (no raw MSISDN leaves it).

**When:** once a day, after the day is over. Input, profile and start date: the CDR entry of
the source registry (`cdr_events`, `source: cdr`; `<raw_dir>/cdr/` in the synthetic city) and
the cell-tower reference table `<raw_dir>/city/towers.csv`.

**Privacy:** `epsilon`/`delta` per subscriber per day from the stored release policy
(`privacy/policy.yaml`); the params may only tighten it. The budget ledger is the portal's
state DB (`OPENCITY_STATE_URL`), so a retry or rerun of a day returns the recorded release
instead of spending again, whatever `run_dir` says. A privacy officer approves the first
release and every new policy version (task group `approval`).

**Tasks:** ingest -> release -> publish -> manifest (bodies in
`opencity.pipelines.mobility`).

**Engine:** param `engine` (`duckdb` default, `spark`): with `spark` the release task runs
the row-level steps on the Spark master of connection `spark_default` (or
`$OPENCITY_SPARK_MASTER`) as a client-mode driver; only aggregates come back.
"""

from __future__ import annotations

from airflow.sdk import Param, dag, get_current_context

from opencity.airflow_context import data_interval, run_settings
from opencity.dagkit import asset, dag_kwargs, pipeline_task
from opencity.review.airflow import approval_gate
from opencity.source_registry import start_of
from opencity.timetables import PartitionTimetable

# The start date is the registry's (cdr entry, e.g. cdr_events); without one there is no DAG.
_START = start_of("cdr")

_KWARGS = dag_kwargs(
    dag_id="cdr_mobility",
    schedule=PartitionTimetable("0 0 * * *", timezone="UTC"),
    start_date=_START,
    doc_md=__doc__, period="day", example="2026-10-05", example_end="2026-10-06",
    privacy=("epsilon", "delta"), tags=("cdr", "differential-privacy"),
) if _START is not None else {}
if _KWARGS:
    _KWARGS["params"]["engine"] = Param(
        "duckdb", type="string", enum=["duckdb", "spark"], title="Engine",
        description="Where the row-level steps run: duckdb (on the worker) or spark (the "
                    "cluster of connection spark_default or $OPENCITY_SPARK_MASTER, client "
                    "mode from the task; only aggregates come back).")


@dag(**_KWARGS)
def cdr_mobility():
    @pipeline_task
    def ingest() -> dict:
        from pathlib import Path

        from opencity.pipelines import mobility as pipeline
        from opencity.pipelines.partitions import require_input
        from opencity.source_registry import require_source

        settings, (start, end) = run_settings(), data_interval()
        src = require_source(pipeline.SOURCE)  # raw path and profile from the registry
        ingested = pipeline.ingest(settings, start, end,
                                   raw_path=str(Path(settings.raw_dir) / src.path),
                                   profile=src.profile)
        return require_input(ingested, pipeline.SOURCE, start, end,
                             settings.layout.clean(pipeline.SOURCE, start))

    @pipeline_task
    def release(ingested: dict) -> dict:
        from opencity.pipelines import mobility as pipeline

        params = get_current_context()["params"]
        engine = params.get("engine") or "duckdb"
        return pipeline.release(run_settings(), ingested, data_interval()[0],
                                float(params["epsilon"]), float(params["delta"]), engine=engine,
                                spark_master=pipeline.spark_master_from_airflow()
                                if engine == "spark" else None)

    @pipeline_task(outlets=[asset("cdr_mobility")])
    def publish(released: dict) -> dict:
        from opencity.pipelines import mobility as pipeline

        start, end = data_interval()
        return pipeline.publish(run_settings(), released, start, end,
                                get_current_context()["run_id"])

    @pipeline_task
    def manifest(ingested: dict, released: dict, published: dict) -> str:
        from opencity.pipelines import mobility as pipeline

        ctx = get_current_context()
        start, end = data_interval()
        return pipeline.manifest(run_settings(), ctx["dag"].dag_id, ctx["run_id"], start, end,
                                 ingested, released, published)

    ingested = ingest()
    released = release(ingested)
    published = publish(released)
    # A privacy officer approves the first release and every new policy version.
    released >> approval_gate("opencity-cdr-mobility-daily") >> published
    manifest(ingested, released, published)


if _START is not None:
    cdr_mobility()
