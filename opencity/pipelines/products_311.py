"""The 311 products of one week taken together: the DAG's ingest and its manifest.

dags/opencity_311.py releases the weekly table and the microdata as two independent products
(opencity.release specs); its manifest task runs when at least one of them got through. The
manifest is written for what was produced, then the runner fails the run naming the product
that failed, so nothing is silently missing: the grid is red, the other product is published
and recorded.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from opencity.release import Outcome, failed_products, failure_record
from opencity.settings import Settings

WEEKLY = "opencity-311-requests-weekly"
MICRODATA = "opencity-311-requests-microdata"


def ingest(settings: Settings, start: datetime, end: datetime) -> dict[str, Any]:
    """The week's 311 rows (an interval without input rows fails here)."""
    from opencity.pipelines import service_requests as p

    return p.ingest(settings, start, end)


def manifest(settings: Settings, dag_id: str, run_id: str, start: datetime, end: datetime,
             ingested: dict, outcomes: Mapping[str, Outcome]) -> str:
    """Write the week's manifest (opencity.pipelines.service_requests.manifest) for what was
    produced; the runner raises ProductFailedError afterwards when a product failed.

    Returns:
        The manifest path.
    """
    from opencity.pipelines import service_requests as p

    failed = failed_products(outcomes)
    weekly = outcomes.get(WEEKLY) or Outcome(None, None, None)
    staged = weekly.staged.to_xcom() if weekly.staged else None
    committed = weekly.committed.to_xcom() if weekly.committed else None
    published = weekly.published.to_xcom() if weekly.published else None
    if WEEKLY in failed:
        staged = {**(staged or {}), "rows": (staged or {}).get("rows"),
                  "rows_suppressed": (staged or {}).get("rows_suppressed"), "failed": True}
        committed = committed or failure_record(WEEKLY)
        published = published or failure_record(WEEKLY)
    micro = outcomes.get(MICRODATA) or Outcome(None, None, None)
    md: dict[str, Any] = {}
    for part in (micro.staged, micro.committed, micro.published):
        if part is not None:
            md.update(part.to_xcom())
    if MICRODATA in failed:
        md = {**md, **failure_record(MICRODATA)}
    md = {k: v for k, v in md.items() if k != "domains"}  # code lists: not run facts
    return p.manifest(settings, dag_id, run_id, start, end, ingested, staged, committed,
                      published, extra={"microdata": md, "failed_products": failed})
