"""311 service requests: ingest -> aggregate (suppressed) -> commit partition -> publish,
and in parallel the k-anonymous microdata release (privacy.kanon) -> publish.

Runs once per weekly data interval (Monday 00:00 UTC to the next Monday). The DAG only wires
tasks: their bodies live in opencity.pipelines.service_requests and are imported inside the
tasks, so parsing this file touches no database, network or Variable.

Params (or OPENCITY_* environment variables): run_dir, raw_dir, publish_target, ckan_url.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import Asset, dag, get_current_context, task
from airflow.timetables.interval import CronDataIntervalTimetable

from opencity.airflow_context import SETTINGS_PARAMS, data_interval, run_settings
from opencity.review.airflow import approval_gate

PRODUCT = Asset("opencity://outputs/opencity-311-requests-weekly")
MICRODATA = Asset("opencity://outputs/opencity-311-requests-microdata")



@dag(
    dag_id="opencity_311",
    schedule=CronDataIntervalTimetable("0 0 * * 1", timezone="UTC"),
    start_date=pendulum.datetime(2026, 10, 5, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    params=dict(SETTINGS_PARAMS),
    tags=["opencity", "311"],
    doc_md=__doc__,
)
def opencity_311():
    @task
    def ingest() -> dict:
        from opencity.pipelines import service_requests as p

        start, end = data_interval()
        return p.ingest(run_settings(), start, end)

    @task
    def aggregate(ingested: dict) -> dict:
        from opencity.pipelines import service_requests as p

        return p.aggregate(run_settings(), ingested, data_interval()[0])

    @task
    def commit_partition(staged: dict) -> dict:
        from opencity.pipelines import service_requests as p

        return p.commit_partition(run_settings(), staged, data_interval()[0])

    @task(outlets=[PRODUCT])
    def publish(committed: dict, ingested: dict) -> dict:
        from opencity.pipelines import service_requests as p

        start, end = data_interval()
        run_id = get_current_context()["run_id"]
        return p.publish(run_settings(), committed, start, end, run_id, ingested)

    @task
    def anonymize_microdata(ingested: dict) -> dict:
        from opencity.pipelines import microdata_311 as m

        start, end = data_interval()
        return m.anonymize_partition(run_settings(), ingested, start, end)

    @task(outlets=[MICRODATA])
    def publish_microdata(staged_md: dict, ingested: dict) -> dict:
        from opencity.pipelines import microdata_311 as m

        start, end = data_interval()
        run_id = get_current_context()["run_id"]
        return m.commit_and_publish(run_settings(), staged_md, start, end, run_id,
                                    ingested.get("input_hashes", {}))

    @task
    def manifest(ingested: dict, staged: dict, committed: dict, published: dict,
                 microdata: dict, microdata_published: dict) -> str:
        from opencity.pipelines import service_requests as p

        ctx = get_current_context()
        start, end = data_interval()
        return p.manifest(run_settings(), ctx["dag"].dag_id, ctx["run_id"], start, end,
                          ingested, staged, committed, published,
                          extra={"microdata": {**microdata, **microdata_published}})

    ingested = ingest()
    staged = aggregate(ingested)
    committed = commit_partition(staged)
    published = publish(committed, ingested)
    staged_md = anonymize_microdata(ingested)
    published_md = publish_microdata(staged_md, ingested)
    # A privacy officer approves the first release and every new policy version.
    gate = approval_gate(("opencity-311-requests-weekly", "opencity-311-requests-microdata"))
    [committed, staged_md] >> gate >> [published, published_md]
    manifest(ingested, staged, committed, published, staged_md, published_md)


opencity_311()
