"""Monthly smart-city KPIs (ITU U4SSC) with differential privacy and a monitoring dashboard.

ingest -> compute -> dashboard -> commit_partition -> publish -> manifest, once per calendar
month (data interval = the month, UTC). Task bodies live in opencity.pipelines.kpi and are
imported inside the tasks, so parsing this file touches no database, network or Variable.

Scheduling and Assets: the timetable is a monthly CronDataIntervalTimetable ("0 0 1 * *"), so
a run for a month starts once that month is over, i.e. after the weekly/daily source DAGs have
had their intervals of the month. The ingest task declares the other DAGs' published products
as inlets (lineage in the Asset graph: opencity_311, cdr_mobility -> opencity_kpi) and publish declares the
KPI product as an outlet. The KPI DAG is deliberately not *triggered* by those Assets: an
Asset schedule (or AssetOrTimeSchedule) would start a KPI run after every weekly 311 or daily
CDR release, with data intervals that are not months. It reads the raw landing area of the
month itself (and the catalog, for the open-data KPI), so it does not depend on the other
DAGs' partitioning.

Params (or OPENCITY_* environment variables): run_dir, raw_dir, publish_target, ckan_url.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import Asset, dag, get_current_context, task
from airflow.timetables.interval import CronDataIntervalTimetable

from opencity.airflow_context import SETTINGS_PARAMS, data_interval, run_settings
from opencity.review.airflow import approval_gate

# Products of the source DAGs (opencity_311, cdr_mobility), declared as inlets for lineage.
SOURCE_PRODUCTS = [Asset("opencity://outputs/opencity-311-requests-weekly"),
                   Asset("opencity://outputs/opencity-cdr-mobility-daily")]
PRODUCT = Asset("opencity://outputs/opencity-kpis")



@dag(
    dag_id="opencity_kpi",
    schedule=CronDataIntervalTimetable("0 0 1 * *", timezone="UTC"),
    start_date=pendulum.datetime(2026, 10, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    params=dict(SETTINGS_PARAMS),
    tags=["opencity", "kpi"],
    doc_md=__doc__,
)
def opencity_kpi():
    @task(inlets=SOURCE_PRODUCTS)
    def ingest() -> dict:
        from opencity.pipelines import kpi as p

        start, end = data_interval()
        return p.ingest(run_settings(), start, end)

    @task
    def compute(ingested: dict) -> dict:
        from opencity.pipelines import kpi as p

        start, end = data_interval()
        return p.compute(run_settings(), ingested, start, end)

    @task
    def dashboard(staged: dict) -> dict:
        from opencity.pipelines import kpi as p

        return p.dashboard(run_settings(), staged, data_interval()[0])

    @task
    def commit_partition(staged: dict, rendered: dict) -> dict:
        from opencity.pipelines import kpi as p

        return p.commit_partition(run_settings(), staged, data_interval()[0])

    @task(outlets=[PRODUCT])
    def publish(committed: dict, staged: dict, ingested: dict) -> dict:
        from opencity.pipelines import kpi as p

        start, end = data_interval()
        run_id = get_current_context()["run_id"]
        return p.publish(run_settings(), committed, staged, start, end, run_id, ingested)

    @task
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
