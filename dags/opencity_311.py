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

PRODUCT = Asset("opencity://outputs/opencity-311-requests-weekly")
MICRODATA = Asset("opencity://outputs/opencity-311-requests-microdata")


def _settings():
    from opencity.settings import Settings

    params = get_current_context()["params"]
    return Settings.resolve({k: params.get(k) for k in ("run_dir", "raw_dir", "publish_target",
                                                        "ckan_url")})


def _interval():
    ctx = get_current_context()
    return ctx["data_interval_start"], ctx["data_interval_end"]


@dag(
    dag_id="opencity_311",
    schedule=CronDataIntervalTimetable("0 0 * * 1", timezone="UTC"),
    start_date=pendulum.datetime(2026, 10, 5, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    params={"run_dir": None, "raw_dir": None, "publish_target": None, "ckan_url": None},
    tags=["opencity", "311"],
    doc_md=__doc__,
)
def opencity_311():
    @task
    def ingest() -> dict:
        from opencity.pipelines import service_requests as p

        start, end = _interval()
        return p.ingest(_settings(), start, end)

    @task
    def aggregate(ingested: dict) -> dict:
        from opencity.pipelines import service_requests as p

        return p.aggregate(_settings(), ingested, _interval()[0])

    @task
    def commit_partition(staged: dict) -> dict:
        from opencity.pipelines import service_requests as p

        return p.commit_partition(_settings(), staged, _interval()[0])

    @task(outlets=[PRODUCT])
    def publish(committed: dict, ingested: dict) -> dict:
        from opencity.pipelines import service_requests as p

        start, end = _interval()
        run_id = get_current_context()["run_id"]
        return p.publish(_settings(), committed, start, end, run_id, ingested)

    @task
    def anonymize_microdata(ingested: dict) -> dict:
        from opencity.pipelines import microdata_311 as m

        start, end = _interval()
        return m.anonymize_partition(_settings(), ingested, start, end)

    @task(outlets=[MICRODATA])
    def publish_microdata(staged_md: dict, ingested: dict) -> dict:
        from opencity.pipelines import microdata_311 as m

        start, end = _interval()
        run_id = get_current_context()["run_id"]
        return m.commit_and_publish(_settings(), staged_md, start, end, run_id,
                                    ingested.get("input_hashes", {}))

    @task
    def manifest(ingested: dict, staged: dict, committed: dict, published: dict,
                 microdata: dict, microdata_published: dict) -> str:
        from opencity.pipelines import service_requests as p

        ctx = get_current_context()
        start, end = _interval()
        return p.manifest(_settings(), ctx["dag"].dag_id, ctx["run_id"], start, end,
                          ingested, staged, committed, published,
                          extra={"microdata": {**microdata, **microdata_published}})

    ingested = ingest()
    staged = aggregate(ingested)
    committed = commit_partition(staged)
    published = publish(committed, ingested)
    staged_md = anonymize_microdata(ingested)
    published_md = publish_microdata(staged_md, ingested)
    manifest(ingested, staged, committed, published, staged_md, published_md)


opencity_311()
