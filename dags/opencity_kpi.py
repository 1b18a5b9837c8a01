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

**Tasks:** ingest -> compute -> dashboard -> commit_partition -> approval -> publish ->
manifest: the product specification `opencity.pipelines.kpi.KPIS`, released by the one runner
(`opencity.release`) in a DAG from `opencity.dagkit.release_dag`.

**A city without some sources:** a KPI whose source is not in the city's source registry is
published as "not available (source X is not registered)" (no value, no privacy budget
spent) and the dashboard shows that reason; the run does not fail. The KPI registry is
`kpi/registry.yaml`, or the file `OPENCITY_KPI_REGISTRY` names (`opencity run --config DIR`
uses `DIR/kpi_registry.yaml` when present).
"""

from __future__ import annotations

# An Airflow DAG file: the DAG comes from opencity.dagkit.release_dag (Airflow's safe-mode
# parsing looks for the words "airflow" and "dag" in the file).

from opencity.dagkit import asset, release_dag
from opencity.pipelines import kpi
from opencity.source_registry import start_of
from opencity.timetables import PartitionTimetable

SOURCE_PRODUCTS = [asset("311_weekly"), asset("cdr_mobility")]

dag = release_dag(
    dag_id="opencity_kpi",
    schedule=PartitionTimetable("0 0 1 * *", timezone="UTC"),
    start_date=start_of(month=True),
    doc_md=__doc__, period="month", example="2026-10-01", example_end="2026-11-01",
    tags=("kpi",),
    ingest=kpi.ingest_interval,
    products=(kpi.KPIS,),
    manifest=kpi.manifest_outcomes,
    inlets=SOURCE_PRODUCTS,
)
