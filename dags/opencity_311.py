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
anonymize_microdata -> commit_microdata -> publish_microdata (each commit: composition guard
and quality gate; the approval gate before the publish tasks), then manifest (row counts,
input hashes, params).
The two products are independent: a failed microdata does not stop the weekly table (and
the reverse); the manifest is written for what got through and the run then fails naming
the product that failed. The composition guard of each product checks it against the other
product already in outputs/ for the week; when that is why a product is refused, its error
says so. A city whose policy has no microdata entry (or `enabled: false`) skips it.
The products are specifications (`opencity.pipelines.service_requests.WEEKLY`,
`opencity.pipelines.microdata_311.MICRODATA`) released by one runner (`opencity.release`);
this file only builds the DAG from them (`opencity.dagkit.release_dag`).
"""

from __future__ import annotations

# An Airflow DAG file: the DAG comes from opencity.dagkit.release_dag (Airflow's safe-mode
# parsing looks for the words "airflow" and "dag" in the file).

from opencity.dagkit import release_dag
from opencity.pipelines import products_311 as products
from opencity.pipelines.microdata_311 import MICRODATA
from opencity.pipelines.service_requests import WEEKLY
from opencity.source_registry import start_of
from opencity.timetables import PartitionTimetable

# The start date is the registry's (service_requests entry); without one there is no DAG.
_START = start_of("service_requests")

if _START is not None:
    dag = release_dag(
        dag_id="opencity_311",
        schedule=PartitionTimetable("0 0 * * 1", timezone="UTC"),
        start_date=_START,
        doc_md=__doc__, period="week", example="2026-10-05", example_end="2026-10-12",
        privacy=("suppression_k", "microdata_k", "microdata_l", "microdata_max_suppression"),
        tags=("311",),
        ingest=products.ingest,
        products=(WEEKLY, MICRODATA),
        manifest=products.manifest,
    )
