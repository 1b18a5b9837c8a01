"""The 311 service-request pipeline: the task bodies behind dags/opencity_311.py.

Each step takes Settings and the data interval, reads and writes paths in the run directory,
and returns a small JSON-able dict (paths and counts) for XCom. Steps are idempotent for an
interval: a rerun overwrites its own partition and nothing else.

    ingest            raw/service_requests/requests.csv -> clean + quarantine partitions
    aggregate         clean partition -> staged weekly district x type counts, small counts
                      suppressed (fewer than Settings.suppression_k distinct requesters)
    commit_partition  staged files -> outputs/<dataset>/dt=.../ (Parquet + CSV copy)
    publish           outputs partition -> the configured catalog (local by default)
    manifest          row counts, input hashes, parameters, code version
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from opencity import __version__
from opencity.errors import DataQualityError
from opencity.io import (
    discard_on_failure,
    read_reference_csv,
    replace_dir,
    write_csv_atomic,
    write_parquet_atomic,
)
from opencity.manifest import input_hashes, write_manifest
from opencity.settings import Settings, partition_name
from privacy.suppression import SmallCountSuppression, suppress_small_counts
from publish.base import DatasetRelease, Field, Resource
from publish.leftovers import clean_partition_leftovers
from publish.targets import publisher_for
from transforms.schemas import DISTRICTS

log = logging.getLogger(__name__)

SOURCE = "service_requests"
DATASET = "opencity-311-requests-weekly"
RAW_FILE = Path("service_requests") / "requests.csv"
FIELDS = (
    Field("week_start", "date", "Monday (UTC) that starts the week of the requests"),
    Field("district_id", "string", "District identifier (see the districts reference table)"),
    Field("request_type", "string", "Type of service request"),
    Field("requests", "integer", "Number of requests; empty when withheld (too few requesters)"),
    Field("median_resolution_hours", "number",
          "Median hours from creation to closure of closed requests; empty when withheld",
          unit="h"),
    Field("suppressed", "boolean", "True when the counts were withheld to protect requesters"),
)


def _interval_dict(start: datetime, end: datetime) -> dict[str, str]:
    return {"start": start.isoformat(), "end": end.isoformat()}


def ingest(settings: Settings, start: datetime, end: datetime, key=None,
           profile: str = "opencity", raw_path: str | None = None) -> dict[str, Any]:
    """Ingest the raw 311 file rows of [start, end) into the clean partition."""
    from transforms.ingest import Reference, ingest_file
    from transforms.pseudonymize import resolve_hmac_key

    layout = settings.layout
    raw = Path(raw_path) if raw_path else Path(settings.raw_dir) / RAW_FILE
    districts_csv = Path(settings.raw_dir) / "city" / "districts.csv"
    reference = Reference(districts=read_reference_csv(districts_csv, DISTRICTS))
    result = ingest_file(
        SOURCE, raw, layout.clean(SOURCE, start),
        quarantine_dir=layout.quarantine(SOURCE, start),
        key=key or resolve_hmac_key(), interval=(start, end), reference=reference,
        profile=profile,
    )
    out = result.as_dict()
    # An interval without input fails here, with that message, leaving no empty partition.
    from opencity.pipelines.partitions import require_input

    require_input(out, SOURCE, start, end, layout.clean(SOURCE, start))
    out["interval"] = _interval_dict(start, end)
    out["input_hashes"] = input_hashes([raw, districts_csv])
    out["validation"] = _validate_clean(settings, out, start, end, reference.districts)
    return out


def _validate_clean(settings: Settings, out: dict[str, Any], start: datetime, end: datetime,
                    districts) -> dict[str, Any]:
    """GX gate on the clean partition (expectations.service_requests); rows failing row-level
    expectations move to the quarantine and the counts in ``out`` are adjusted to reconcile."""
    from expectations.gate import validate_or_raise

    layout = settings.layout
    summary = validate_or_raise(
        SOURCE, out["clean_path"], reports_dir=layout.reports(SOURCE, start),
        context={"interval": (start, end), "districts": districts, "bbox": "districts",
                 "previous_partition": layout.clean(SOURCE, start),
                 "quarantine_dir": layout.quarantine(SOURCE, start)})
    moved = summary["rows_quarantined"]
    if moved:
        out["rows_out"] -= moved
        out["rows_quarantined"] += moved
        out["quarantine_path"] = out["quarantine_path"] or str(layout.quarantine(SOURCE, start))
        for reason, n in summary["reasons"].items():
            out["reasons"][reason] = out["reasons"].get(reason, 0) + n
    return summary


def aggregate(settings: Settings, ingested: dict[str, Any], start: datetime) -> dict[str, Any]:
    """Weekly district x type counts with small-count suppression, staged for commit."""
    from transforms.service_requests import weekly_requests

    districts = read_reference_csv(Path(settings.raw_dir) / "city" / "districts.csv", DISTRICTS)
    clean = pq.read_table(ingested["clean_path"])
    counts = weekly_requests(clean, districts, start)
    rule = SmallCountSuppression(
        threshold=settings.suppression_k,
        count_columns=("requests", "median_resolution_hours"),
        unit_column="requesters",
    )
    released = suppress_small_counts(counts, rule)
    staging = settings.layout.output(DATASET, start).with_name(
        f".{partition_name(start)}.staging")
    write_parquet_atomic(released, staging / "part-0.parquet")
    n_suppressed = sum(released.column("suppressed").to_pylist())
    return {
        "staging_dir": str(staging),
        "rows": released.num_rows,
        "rows_suppressed": n_suppressed,
        "requests_in_clean": clean.num_rows,
        "requests_published": sum(
            v for v in released.column("requests").to_pylist() if v is not None),
        "cells_suppressed_requests": sum(
            v for v, s in zip(counts.column("requests").to_pylist(),
                              released.column("suppressed").to_pylist()) if s and v),
        "unmatched_requests": clean.num_rows - sum(counts.column("requests").to_pylist()),
        "suppression": {"threshold": rule.threshold, "unit": "distinct requesters"},
    }


def commit_partition(settings: Settings, staged: dict[str, Any], start: datetime) -> dict:
    """Move the staged product into outputs/<dataset>/dt=.../ and add a CSV copy."""
    from opencity.pipelines.partitions import committed

    staging = Path(staged["staging_dir"])
    final = settings.layout.output(DATASET, start)
    if committed(staging, final, "part-0.parquet"):
        # Rerun alone after an earlier try moved the staging directory into place.
        validation = _validate_product(settings, final / "part-0.parquet", start)
        return {"output_dir": str(final), "files": sorted(p.name for p in final.iterdir()),
                "rows": pq.read_metadata(final / "part-0.parquet").num_rows,
                "validation": validation}
    parquet = staging / "part-0.parquet"
    if not parquet.exists():
        raise DataQualityError(f"nothing staged for {DATASET} {partition_name(start)}: "
                               f"{parquet} is missing; rerun the aggregate task")
    with discard_on_failure(staging):
        validation = _validate_product(settings, parquet, start)
    table = pq.read_table(parquet)
    final = replace_dir(staging, settings.layout.output(DATASET, start))
    write_csv_atomic(table, settings.layout.csv(DATASET, start) / "part-0.csv")
    clean_partition_leftovers(final)
    return {"output_dir": str(final), "files": sorted(p.name for p in final.iterdir()),
            "rows": table.num_rows, "validation": validation}


def _validate_product(settings: Settings, parquet: Path, start: datetime) -> dict[str, Any]:
    """GX gate on the staged weekly product; a failure stops the run before anything moves."""
    from expectations.gate import validate_or_raise

    districts = read_reference_csv(Path(settings.raw_dir) / "city" / "districts.csv", DISTRICTS)
    return validate_or_raise(
        DATASET, parquet, reports_dir=settings.layout.reports(DATASET, start),
        context={"interval": (start, start + timedelta(weeks=1)), "districts": districts,
                 "previous_partition": settings.layout.output(DATASET, start),
                 "privacy": {"kind": "suppressed", "count_columns": ["requests"],
                             "threshold": settings.suppression_k}})


def release_for(settings: Settings, committed: dict, start: datetime, end: datetime,
                provenance: dict) -> DatasetRelease:
    out = Path(committed["output_dir"])
    part = partition_name(start)
    return DatasetRelease(
        name=DATASET,
        title=f"311 service requests per district and type, weekly - {settings.city_name}",
        description=(
            "Weekly number of 311 service requests per district and request type, with the "
            "median resolution time. Counts backed by fewer than "
            f"{settings.suppression_k} distinct requesters are withheld (empty) and flagged "
            "in the 'suppressed' column; no personal data of requesters is published."
        ),
        resources=(
            Resource(out / "part-0.parquet", "requests-weekly", "parquet",
                     f"Week starting {start:%Y-%m-%d} (Parquet)", part),
            Resource(settings.layout.csv(DATASET, start) / "part-0.csv", "requests-weekly-csv",
                     "csv",
                     f"Week starting {start:%Y-%m-%d} (CSV copy)", part),
        ),
        fields=FIELDS,
        privacy={"privacy_method": "small_count_suppression",
                 "suppression_threshold": settings.suppression_k,
                 "privacy_unit": "requester"},
        tags=("311", "service-requests", "kpi", "open-data"),
        temporal_coverage=(f"{start:%Y-%m-%d}", f"{end:%Y-%m-%d}"),
        spatial_coverage=settings.city_name,
        accrual_periodicity="R/P1W",
        provenance=provenance,
    )


def publish(settings: Settings, committed: dict, start: datetime, end: datetime,
            run_id: str, ingested: dict) -> dict:
    provenance = {"pipeline_version": __version__, "run_id": run_id,
                  "input_hashes": ingested.get("input_hashes", {})}
    result = publisher_for(settings).publish(
        release_for(settings, committed, start, end, provenance))
    return {"target": result.target, "url": result.url, "created": result.created,
            "uploaded": list(result.uploaded), "unchanged": list(result.unchanged)}


def manifest(settings: Settings, dag_id: str, run_id: str, start: datetime, end: datetime,
             ingested: dict, staged: dict, committed: dict, published: dict,
             extra: dict | None = None) -> str:
    path = settings.layout.manifest(dag_id, start)
    write_manifest(path, {
        "dag_id": dag_id,
        "run_id": run_id,
        "partition": partition_name(start),
        "data_interval": _interval_dict(start, end),
        "parameters": {"suppression_k": settings.suppression_k,
                       "publish_target": settings.publish_target},
        "inputs": ingested.get("input_hashes", {}),
        "row_counts": {
            "rows_in": ingested["rows_in"],
            "rows_clean": ingested["rows_out"],
            "rows_quarantined": ingested["rows_quarantined"],
            "rows_other_intervals": ingested["rows_other_intervals"],
            "product_rows": staged["rows"],
            "product_rows_suppressed": staged["rows_suppressed"],
        },
        "quarantine": {"path": ingested.get("quarantine_path"),
                       "reasons": ingested.get("reasons", {})},
        "outputs": committed,
        "published": published,
        "validation": {"clean": ingested.get("validation"),
                       "product": committed.get("validation")},
        **(extra or {}),
    })
    log.info("manifest written: %s", path)
    return str(path)
