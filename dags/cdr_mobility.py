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

**Tasks:** ingest -> release -> commit_partition (release gate) -> approval -> publish ->
manifest: the product specification `opencity.pipelines.mobility.MOBILITY`, released by the
one runner (`opencity.release`) in a DAG from `opencity.dagkit.release_dag`.

**Engine:** param `engine` (`duckdb` default, `spark`): with `spark` the release task runs
the row-level steps on the Spark master of connection `spark_default` (or
`$OPENCITY_SPARK_MASTER`) as a client-mode driver; only aggregates come back.
"""

from __future__ import annotations

from airflow.sdk import Param

from opencity.dagkit import release_dag
from opencity.pipelines import mobility
from opencity.source_registry import start_of
from opencity.timetables import PartitionTimetable

_START = start_of("cdr")

if _START is not None:
    dag = release_dag(
        dag_id="cdr_mobility",
        schedule=PartitionTimetable("0 0 * * *", timezone="UTC"),
        start_date=_START,
        doc_md=__doc__, period="day", example="2026-10-05", example_end="2026-10-06",
        privacy=("epsilon", "delta"), tags=("cdr", "differential-privacy"),
        params={"engine": Param(
            "duckdb", type="string", enum=["duckdb", "spark"], title="Engine",
            description="Where the row-level steps run: duckdb (on the worker) or spark (the "
                        "cluster of connection spark_default or $OPENCITY_SPARK_MASTER, client "
                        "mode from the task; only aggregates come back).")},
        ingest=mobility.ingest_interval,
        products=(mobility.MOBILITY,),
        manifest=mobility.manifest_outcomes,
    )
