"""
## 311 service requests, weekly (`opencity_311`)

**Publishes** two datasets for every week (Monday 00:00 UTC to the next Monday):

* `opencity-311-requests-weekly`: requests per district and type with the median resolution
  time; counts backed by fewer than `suppression_k` distinct requesters are withheld.
* `opencity-311-requests-microdata`: one record per request, k-anonymous and l-diverse
  (the policy's quasi-identifiers the input provides: age band, gender, district, day or
  week, status; the type is the sensitive attribute), when the week allows it.

**When:** once a week, after the week is over (the run for the week starting Monday
2026-10-05 starts on 2026-10-12). Input, start date and profile: the `service_requests` entry
of the source registry (`opencity/sources.yaml`, `OPENCITY_SOURCES_FILE` or `opencity run
--config DIR`); the districts and request categories come from the profile's reference files
(else `<raw_dir>/city/districts.csv`).

**Tasks:** ingest -> aggregate -> commit_partition -> publish_weekly, and
anonymize_microdata -> publish_microdata, then manifest (row counts, input hashes, params).
The two products are independent: a failed microdata does not stop the weekly table (and
the reverse); the manifest is written for what got through and the run then fails naming
the product that failed. The composition guard of each product checks it against the other
product already in outputs/ for the week; when that is why a product is refused, its error
says so. A city whose policy has no microdata entry (or `enabled: false`) skips it.
The task bodies live in `opencity.pipelines`; this file only wires them (opencity.dagkit).
"""

from __future__ import annotations

from airflow.sdk import TriggerRule, dag, get_current_context

from opencity.airflow_context import data_interval, run_settings
from opencity.dagkit import asset, dag_kwargs, pipeline_task
from opencity.review.airflow import approval_gate
from opencity.source_registry import start_of
from opencity.timetables import PartitionTimetable

# The start date is the registry's (service_requests entry); without one there is no DAG.
_START = start_of("service_requests")


@dag(**dag_kwargs(
    dag_id="opencity_311",
    schedule=PartitionTimetable("0 0 * * 1", timezone="UTC"),
    start_date=_START,
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

    # Runs when at least one product got through, so a failed product leaves the other's
    # record; it writes the manifest, then fails the run naming the product that failed.
    @pipeline_task(trigger_rule=TriggerRule.ALL_DONE_MIN_ONE_SUCCESS)
    def manifest(ingested: dict, staged: dict | None, committed: dict | None,
                 published: dict | None, microdata: dict | None,
                 microdata_published: dict | None) -> str:
        from opencity.pipelines import products_311 as products

        ctx = get_current_context()
        start, end = data_interval()
        return products.manifest(run_settings(), ctx["dag"].dag_id, ctx["run_id"], start, end,
                                 ingested, staged, committed, published, microdata,
                                 microdata_published)

    ingested = ingest()
    staged = aggregate(ingested)
    committed = commit_partition(staged)
    published = publish_weekly(committed, ingested)
    staged_md = anonymize_microdata(ingested)
    published_md = publish_microdata(staged_md, ingested)
    # A privacy officer approves the first release and every new policy version.
    gate = approval_gate(("opencity-311-requests-weekly", "opencity-311-requests-microdata"))
    [committed, staged_md] >> gate >> [published, published_md]
    # One product's failure does not hold back the other: the gate opens once both staged
    # (or failed) with at least one staged; each publish task still needs its own product.
    for t in gate.roots:
        t.trigger_rule = TriggerRule.ALL_DONE_MIN_ONE_SUCCESS
    manifest(ingested, staged, committed, published, staged_md, published_md)


if _START is not None:
    opencity_311()
