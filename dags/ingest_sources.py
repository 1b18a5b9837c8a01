"""
## Source ingestion DAGs (`ingest_<source>`), one per entry of the source registry

**Produces** the restricted clean partition `clean/<source>/dt=.../` (typed, pseudonymized)
and the quarantine of rows that failed, for one data interval of one city source, plus a
manifest. Nothing is published: the publishing DAGs and the KPI DAG read these sources.

**Configured, not coded:** sources, file layout, input profile and schedule come from
`opencity/sources.yaml` (or `OPENCITY_SOURCES_FILE`); adding a city source is a YAML edit.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import Asset, dag, get_current_context

from opencity.airflow_context import data_interval, run_settings
from opencity.dagkit import dag_kwargs, pipeline_task
from opencity.source_registry import Source, load_sources
from opencity.timetables import PartitionTimetable


def build(src: Source):
    doc = (__doc__ + f"\n**This DAG:** `{src.name}` from `<raw_dir>/{src.path}` (profile "
           f"`{src.profile}`, schedule `{src.schedule}` UTC). {src.description}\n")
    start = pendulum.datetime(src.start_date.year, src.start_date.month, src.start_date.day,
                              tz="UTC")

    @dag(**dag_kwargs(
        f"ingest_{src.name}",
        schedule=PartitionTimetable(src.schedule, timezone="UTC"), start_date=start,
        doc_md=doc, period="interval", example=f"{start:%Y-%m-%d}",
        example_end=f"{start.add(days=1):%Y-%m-%d}", tags=("ingest", src.name),
    ))
    def ingest_source():
        @pipeline_task(outlets=[Asset(f"opencity://clean/{src.name}")])
        def ingest() -> dict:
            from opencity.pipelines import ingest_source as p

            begin, end = data_interval()
            return p.ingest(run_settings(), src.kind, src.path, src.profile, begin, end)

        @pipeline_task
        def manifest(ingested: dict) -> str:
            from opencity.pipelines import ingest_source as p

            ctx = get_current_context()
            begin, end = data_interval()
            return p.manifest(run_settings(), ctx["dag"].dag_id, ctx["run_id"], src.name,
                              begin, end, ingested)

        manifest(ingest())

    return ingest_source()


for _src in load_sources().values():
    if not _src.dag:  # the 311, CDR and KPI DAGs ingest their own sources
        globals()[f"ingest_{_src.name}"] = build(_src)
