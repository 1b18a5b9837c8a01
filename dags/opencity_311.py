"""
## 311 service requests, weekly (`opencity_311`)

**Publishes** two datasets for every week (Monday 00:00 UTC to the next Monday):

* `opencity-311-requests-weekly`: requests per district and type with the median resolution
  time; counts backed by fewer than `suppression_k` distinct requesters are withheld.
* `opencity-311-requests-microdata`: one record per request, k-anonymous and l-diverse
  (age band, gender, district, day or week, type, status), when the week allows it.

**When:** once a week, after the week is over (the run for the week starting Monday
2026-10-05 starts on 2026-10-12). Input: `<raw_dir>/service_requests/requests.csv` and the
districts reference table `<raw_dir>/city/districts.csv`.

**Tasks:** ingest -> aggregate -> commit_partition -> publish_weekly, and
anonymize_microdata -> publish_microdata, then manifest (row counts, input hashes, params).
The task bodies live in `opencity.pipelines`; this file only wires them (opencity.dagkit).
"""

from __future__ import annotations

import pendulum
from airflow.sdk import dag, get_current_context

from opencity.airflow_context import data_interval, run_settings
from opencity.dagkit import asset, dag_kwargs, pipeline_task
from opencity.review.airflow import approval_gate
from opencity.timetables import PartitionTimetable


@dag(**dag_kwargs(
    dag_id="opencity_311",
    schedule=PartitionTimetable("0 0 * * 1", timezone="UTC"),
    start_date=pendulum.datetime(2026, 10, 5, tz="UTC"),
    doc_md=__doc__, period="week", example="2026-10-05", example_end="2026-10-12",
    privacy=("suppression_k", "microdata_k", "microdata_l", "microdata_max_suppression"),
    tags=("311",),
))
def opencity_311():
    @pipeline_task
    def ingest() -> dict:
        from opencity.pipelines import service_requests as p

        start, end = data_interval()  # an interval without input rows fails here
        return p.ingest(run_settings(), start, end)

    @pipeline_task
    def aggregate(ingested: dict) -> dict:
        from opencity.pipelines import service_requests as p

        return p.aggregate(run_settings(), ingested, data_interval()[0])

    @pipeline_task
    def commit_partition(staged: dict) -> dict:
        from opencity.pipelines import service_requests as p

        return p.commit_partition(run_settings(), staged, data_interval()[0])

    @pipeline_task(outlets=[asset("311_weekly")])
    def publish_weekly(committed: dict, ingested: dict) -> dict:
        from opencity.pipelines import service_requests as p

        start, end = data_interval()
        run_id = get_current_context()["run_id"]
        return p.publish(run_settings(), committed, start, end, run_id, ingested)

    @pipeline_task
    def anonymize_microdata(ingested: dict) -> dict:
        from opencity.pipelines import microdata_311 as m

        start, end = data_interval()
        return m.anonymize_partition(run_settings(), ingested, start, end)

    @pipeline_task(outlets=[asset("311_microdata")])
    def publish_microdata(staged_md: dict, ingested: dict) -> dict:
        from opencity.pipelines import microdata_311 as m

        start, end = data_interval()
        run_id = get_current_context()["run_id"]
        return m.commit_and_publish(run_settings(), staged_md, start, end, run_id,
                                    ingested.get("input_hashes", {}))

    @pipeline_task
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
    published = publish_weekly(committed, ingested)
    staged_md = anonymize_microdata(ingested)
    published_md = publish_microdata(staged_md, ingested)
    # A privacy officer approves the first release and every new policy version.
    gate = approval_gate(("opencity-311-requests-weekly", "opencity-311-requests-microdata"))
    [committed, staged_md] >> gate >> [published, published_md]
    manifest(ingested, staged, committed, published, staged_md, published_md)


opencity_311()
