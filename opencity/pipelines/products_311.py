"""The 311 products of one week taken together: what got through and what failed.

dags/opencity_311.py runs the weekly table and the microdata as two independent branches;
its manifest task runs when at least one of them got through (a failed task hands on no
XCom: its argument here is None). The manifest is written for what was produced, then the
run fails naming the product that failed, so nothing is silently missing: the grid is red,
the other product is published and recorded.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from opencity.errors import PipelineError
from opencity.settings import Settings, partition_name

WEEKLY = "opencity-311-requests-weekly"
MICRODATA = "opencity-311-requests-microdata"


class ProductFailedError(PipelineError):
    """A product of the run failed while another was published (terminal: rerun the
    interval after fixing what the failed task's log says)."""


def failed_products(staged: dict | None, committed: dict | None, published: dict | None,
                    microdata: dict | None, microdata_published: dict | None) -> list[str]:
    """The products whose branch did not finish (a task of it failed or never ran)."""
    out = []
    if staged is None or committed is None or published is None:
        out.append(WEEKLY)
    if microdata is None or microdata_published is None:
        out.append(MICRODATA)
    return out


def _failed(dataset: str) -> dict[str, Any]:
    return {"failed": True, "published": False,
            "reason": f"a task of {dataset} failed (see its log); nothing of it was published "
                      "for this week"}


def manifest(settings: Settings, dag_id: str, run_id: str, start: datetime, end: datetime,
             ingested: dict, staged: dict | None, committed: dict | None,
             published: dict | None, microdata: dict | None,
             microdata_published: dict | None) -> str:
    """Write the week's manifest (opencity.pipelines.service_requests.manifest) for what was
    produced; raise ProductFailedError afterwards when a product failed.

    Returns:
        The manifest path.
    """
    from opencity.pipelines import service_requests as p

    failed = failed_products(staged, committed, published, microdata, microdata_published)
    if WEEKLY in failed:
        staged = {**(staged or {}), "rows": (staged or {}).get("rows"),
                  "rows_suppressed": (staged or {}).get("rows_suppressed"), "failed": True}
        committed = committed or _failed(WEEKLY)
        published = published or _failed(WEEKLY)
    md = {**(microdata or {}), **(microdata_published or {})}
    if MICRODATA in failed:
        md = {**md, **_failed(MICRODATA)}
    path = p.manifest(settings, dag_id, run_id, start, end, ingested, staged, committed,
                      published, extra={"microdata": md, "failed_products": failed})
    if failed:
        done = [d for d in (WEEKLY, MICRODATA) if d not in failed]
        raise ProductFailedError(
            f"{', '.join(failed)} failed for {partition_name(start)} (see the failed task's "
            f"log); {', '.join(done) or 'no other product'} went through on its own and the "
            f"manifest {path} records it. Fix the cause and rerun the interval")
    return path
