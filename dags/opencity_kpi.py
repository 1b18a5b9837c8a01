"""
## Smart-city KPIs, monthly (`opencity_kpi`)

**Publishes** `opencity-kpis`: the month's ITU U4SSC key performance indicators (311,
mobility, energy meters, transit, waste) with differential privacy where they count people,
and a monitoring dashboard (`dashboard.html`) next to the table.

**When:** once per calendar month (UTC), after the month is over, i.e. after the weekly 311
and daily CDR DAGs have had the month's intervals. It reads the month's raw landing area
(and the catalog, for the open-data KPI) itself; a missing raw source is skipped and its KPIs
say so. The other DAGs' products are declared as inlets (lineage only: an Asset schedule
would start KPI runs whose intervals are not months).

**Tasks:** ingest -> compute -> dashboard -> commit_partition -> publish -> manifest (bodies
in `opencity.pipelines.kpi`).

**A city without some sources:** a KPI whose source is not in the city's source registry is
published as "not available (source X is not registered)" (no value, no privacy budget
spent) and the dashboard shows that reason; the run does not fail. The KPI registry is
`kpi/registry.yaml`, or the file `OPENCITY_KPI_REGISTRY` names (`opencity run --config DIR`
uses `DIR/kpi_registry.yaml` when present).
"""

from __future__ import annotations

from airflow.sdk import dag, get_current_context

from opencity.airflow_context import data_interval, run_settings
from opencity.dagkit import asset, dag_kwargs, pipeline_task
from opencity.review.airflow import approval_gate
from opencity.source_registry import start_of
from opencity.timetables import PartitionTimetable

# Products of the source DAGs (opencity_311, cdr_mobility), declared as inlets for lineage.
SOURCE_PRODUCTS = [asset("311_weekly"), asset("cdr_mobility")]


@dag(**dag_kwargs(
    dag_id="opencity_kpi",
    schedule=PartitionTimetable("0 0 1 * *", timezone="UTC"),
    # the month of the registry's earliest source
    start_date=start_of(month=True),
    doc_md=__doc__, period="month", example="2026-10-01", example_end="2026-11-01",
    tags=("kpi",),
))
def opencity_kpi():
    @pipeline_task(inlets=SOURCE_PRODUCTS)
    def ingest() -> dict:
        from opencity.pipelines import kpi as p
        from opencity.pipelines.partitions import require_any_input

        start, end = data_interval()
        return require_any_input(p.ingest(run_settings(), start, end), start, end)

    @pipeline_task
    def compute(ingested: dict) -> dict:
        from opencity.pipelines import kpi as p

        start, end = data_interval()
        return p.compute(run_settings(), ingested, start, end)

    @pipeline_task
    def dashboard(staged: dict) -> dict:
        from opencity.pipelines import kpi as p

        return p.dashboard(run_settings(), staged, data_interval()[0])

    @pipeline_task
    def commit_partition(staged: dict, rendered: dict) -> dict:
        from opencity.pipelines import kpi as p

        return p.commit_partition(run_settings(), staged, data_interval()[0])

    @pipeline_task(outlets=[asset("kpis")])
    def publish(committed: dict, staged: dict, ingested: dict) -> dict:
        from opencity.pipelines import kpi as p

        start, end = data_interval()
        run_id = get_current_context()["run_id"]
        return p.publish(run_settings(), committed, staged, start, end, run_id, ingested)

    @pipeline_task
    def manifest(ingested: dict, staged: dict, committed: dict, published: dict) -> str:
        from opencity.pipelines import kpi as p

        ctx = get_current_context()
        start, end = data_interval()
        return p.manifest(run_settings(), ctx["dag"].dag_id, ctx["run_id"], start, end,
                          ingested, staged, committed, published)

    ingested = ingest()
    staged = compute(ingested)
    rendered = dashboard(staged)
    committed = commit_partition(staged, rendered)
    published = publish(committed, staged, ingested)
    # A privacy officer approves the first release and every new policy version.
    committed >> approval_gate("opencity-kpis") >> published
    manifest(ingested, staged, committed, published)


opencity_kpi()
