"""311 microdata release: one record per request, k-anonymous (privacy.kanon).

Released attributes: requester age band, gender, district, day/week of the request (the
quasi-identifiers, generalized by the optimal full-domain generalization), request type
(the sensitive attribute, l-diverse within every class) and status. Records of classes that
violate the model are removed while their share stays within the suppression limit; when no
generalization satisfies the model the partition is not released (and the run says so).

Task bodies behind the microdata branch of dags/opencity_311.py.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from opencity import __version__
from opencity.errors import NotAchievableError
from opencity.io import (
    discard_on_failure,
    read_reference_csv,
    replace_dir,
    write_csv_atomic,
    write_parquet_atomic,
)
from opencity.settings import Settings, partition_name
from publish.base import DatasetRelease, Field, Resource
from publish.leftovers import clean_partition_leftovers
from transforms.schemas import DISTRICTS

log = logging.getLogger(__name__)

DATASET = "opencity-311-requests-microdata"
QUASI_IDENTIFIERS = ("age", "gender", "district_id", "created")
SENSITIVE = "request_type"
GENDERS = ("female", "male", "other")
FIELDS = (
    Field("age", "string", "Requester age, generalized (interval or '*')"),
    Field("gender", "string", "Requester gender, generalized ('*' when withheld)"),
    Field("district_id", "string", "District, generalized ('*' when withheld)"),
    Field("created", "string", "Day (YYYY-MM-DD) or ISO week (WYYYY-MM-DD) of the request"),
    Field("request_type", "string", "Type of service request (l-diverse in every class)"),
    Field("status", "string", "Request status at extraction time"),
)


def microdata_table(clean: pa.Table) -> tuple[pa.Table, int]:
    """Project the clean 311 rows to the released attributes.

    Returns the table and the number of rows left out because a quasi-identifier is missing
    (e.g. the requester gave no age): they cannot be placed in a class and are not released.
    """
    table = pa.table({
        "age": clean["requester_age"],
        "gender": clean["requester_gender"],
        "district_id": clean["district_id"],
        "created": clean["created_at"],
        "request_type": clean["request_type"],
        "status": clean["status"],
    })
    mask = None
    for col in (*QUASI_IDENTIFIERS, SENSITIVE):
        valid = pc.is_valid(table[col])
        mask = valid if mask is None else pc.and_(mask, valid)
    kept = table.filter(mask)
    return kept, table.num_rows - kept.num_rows


def anonymize_partition(settings: Settings, ingested: dict[str, Any], start: datetime,
                        end: datetime) -> dict[str, Any]:
    """Run the k-anonymity search on the interval's clean rows and stage the release."""
    from privacy.kanon import Hierarchy, KAnonymity, LDiversity, anonymize

    districts = read_reference_csv(Path(settings.raw_dir) / "city" / "districts.csv", DISTRICTS)
    table, missing_qi = microdata_table(pq.read_table(ingested["clean_path"]))
    hierarchies = {
        "age": Hierarchy.intervals(0, 120, (5, 10, 20)),
        "gender": Hierarchy.flat(GENDERS),
        "district_id": Hierarchy.flat(districts["district_id"].to_pylist()),
        "created": Hierarchy.timestamps(start, end, ("day", "week")),
    }
    model = KAnonymity(k=settings.microdata_k, quasi_identifiers=QUASI_IDENTIFIERS,
                       max_suppression=settings.microdata_max_suppression)
    ldiv = LDiversity(sensitive=SENSITIVE, l=settings.microdata_l, variant="distinct")
    reports = settings.layout.reports(DATASET, start)
    reports.mkdir(parents=True, exist_ok=True)
    report_path = reports / "kanon-report.json"
    base = {"rows_in": table.num_rows, "rows_missing_quasi_identifier": missing_qi,
            "report_path": str(report_path)}
    try:
        result = anonymize(table, hierarchies, model=model, metric="nu-entropy",
                           l_diversity=ldiv, suppression="remove")
    except NotAchievableError as err:
        report_path.write_text(json.dumps({"achievable": False, "reason": str(err)}, indent=2))
        log.warning("311 microdata for %s not released: %s", partition_name(start), err)
        return {**base, "released": False, "reason": str(err)}
    report = {**result.report, "rows_missing_quasi_identifier": missing_qi}
    report_path.write_text(json.dumps(report, indent=2, sort_keys=True, default=str))
    staging = settings.layout.output(DATASET, start).with_name(
        f".{partition_name(start)}.staging")
    # A stable row order makes the files byte-identical across reruns of the same data, so a
    # rerun publishes nothing new (the search's group-bys return rows in no fixed order).
    released = result.table.sort_by([(c, "ascending") for c in result.table.column_names])
    write_parquet_atomic(released, staging / "part-0.parquet")
    return {**base, "released": True, "staging_dir": str(staging),
            "rows_out": released.num_rows,
            "suppressed_records": report.get("suppressed_records"),
            "generalization": result.generalization,
            "k": model.k, "l": ldiv.l, "suppression_limit": model.max_suppression}


def commit_and_publish(settings: Settings, staged: dict[str, Any], start: datetime,
                       end: datetime, run_id: str, input_hashes: dict) -> dict[str, Any]:
    """Move the staged release into outputs/ and publish it (no-op when not released)."""
    from publish.targets import publisher_for

    if not staged.get("released"):
        return {"published": False, "reason": staged.get("reason", "not released")}
    from expectations.gate import validate_or_raise  # GX gate: raises before anything moves
    from opencity.pipelines.partitions import committed

    staging = Path(staged["staging_dir"])
    final = settings.layout.output(DATASET, start)
    # Rerun alone after an earlier try committed: check and publish the committed partition.
    already = committed(staging, final, "part-0.parquet")
    with discard_on_failure(staging):
        validation = validate_or_raise(
            DATASET, (final if already else staging) / "part-0.parquet",
            context={"privacy": {"kind": "microdata",
                                 "quasi_identifiers": list(QUASI_IDENTIFIERS),
                                 "k": staged["k"]}, "run_id": run_id},
            reports_dir=settings.layout.reports(DATASET, start))
    if not already:
        final = replace_dir(staging, final)
    csv_copy = write_csv_atomic(pq.read_table(final / "part-0.parquet"),
                                settings.layout.csv(DATASET, start) / "part-0.csv")
    clean_partition_leftovers(final)
    part = partition_name(start)
    release = DatasetRelease(
        name=DATASET,
        title=f"311 service requests, anonymized records - {settings.city_name}",
        description=(
            "One record per 311 service request with the requester's age band, gender, "
            "district and the day or week of the request, generalized so that every "
            f"combination is shared by at least {staged['k']} records (k-anonymity) and every "
            f"group holds at least {staged['l']} request types (distinct l-diversity). "
            "Records that would need more generalization were removed within the "
            "suppression limit. Names, contacts, addresses and coordinates are never released."
        ),
        resources=(
            Resource(final / "part-0.parquet", "requests-microdata", "parquet",
                     f"Week starting {start:%Y-%m-%d} (Parquet)", part),
            Resource(csv_copy, "requests-microdata-csv", "csv",
                     f"Week starting {start:%Y-%m-%d} (CSV copy)", part),
        ),
        fields=FIELDS,
        privacy={
            "privacy_method": "k_anonymity",
            "k_anonymity_k": staged["k"],
            "l_diversity_l": staged["l"],
            "l_diversity_variant": "distinct",
            "sensitive_attribute": SENSITIVE,
            "quasi_identifiers": list(QUASI_IDENTIFIERS),
            "suppression_limit": staged["suppression_limit"],
            "suppressed_records": staged["suppressed_records"],
            "generalization": staged["generalization"],
        },
        tags=("311", "service-requests", "microdata", "k-anonymity"),
        temporal_coverage=(f"{start:%Y-%m-%d}", f"{end:%Y-%m-%d}"),
        spatial_coverage=settings.city_name,
        accrual_periodicity="R/P1W",
        provenance={"pipeline_version": __version__, "run_id": run_id,
                    "input_hashes": input_hashes},
    )
    result = publisher_for(settings).publish(release)
    return {"published": True, "output_dir": str(final), "target": result.target,
            "url": result.url, "uploaded": list(result.uploaded),
            "unchanged": list(result.unchanged), "validation": validation}
