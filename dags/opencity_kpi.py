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

# Products of the source DAGs (opencity_311, cdr_mobility), declared as inlets for lineage.
SOURCE_PRODUCTS = [Asset("opencity://outputs/opencity-311-requests-weekly"),
                   Asset("opencity://outputs/opencity-cdr-mobility-daily")]
PRODUCT = Asset("opencity://outputs/opencity-kpis")


def _settings():
    from opencity.settings import Settings

    params = get_current_context()["params"]
    return Settings.resolve({k: params.get(k) for k in ("run_dir", "raw_dir", "publish_target",
                                                        "ckan_url")})


def _interval():
    ctx = get_current_context()
    return ctx["data_interval_start"], ctx["data_interval_end"]


@dag(
    dag_id="opencity_kpi",
    schedule=CronDataIntervalTimetable("0 0 1 * *", timezone="UTC"),
    start_date=pendulum.datetime(2026, 10, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    params={"run_dir": None, "raw_dir": None, "publish_target": None, "ckan_url": None},
    tags=["opencity", "kpi"],
    doc_md=__doc__,
)
def opencity_kpi():
    @task(inlets=SOURCE_PRODUCTS)
    def ingest() -> dict:
        from opencity.pipelines import kpi as p

        start, end = _interval()
        return p.ingest(_settings(), start, end)

    @task
    def compute(ingested: dict) -> dict:
        from opencity.pipelines import kpi as p

        start, end = _interval()
        return p.compute(_settings(), ingested, start, end)

    @task
    def dashboard(staged: dict) -> dict:
        from opencity.pipelines import kpi as p

        return p.dashboard(_settings(), staged, _interval()[0])

    @task
    def commit_partition(staged: dict, rendered: dict) -> dict:
        from opencity.pipelines import kpi as p

        return p.commit_partition(_settings(), staged, _interval()[0])

    @task(outlets=[PRODUCT])
    def publish(committed: dict, staged: dict, ingested: dict) -> dict:
        from opencity.pipelines import kpi as p

        start, end = _interval()
        run_id = get_current_context()["run_id"]
        return p.publish(_settings(), committed, staged, start, end, run_id, ingested)

    @task
    def manifest(ingested: dict, staged: dict, committed: dict, published: dict) -> str:
        from opencity.pipelines import kpi as p

        ctx = get_current_context()
        start, end = _interval()
        return p.manifest(_settings(), ctx["dag"].dag_id, ctx["run_id"], start, end,
                          ingested, staged, committed, published)

    ingested = ingest()
    staged = compute(ingested)
    rendered = dashboard(staged)
    committed = commit_partition(staged, rendered)
    published = publish(committed, staged, ingested)
    manifest(ingested, staged, committed, published)


opencity_kpi()
