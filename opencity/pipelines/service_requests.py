"""The 311 service-request pipeline: the task bodies behind dags/opencity_311.py.

Each step takes Settings and the data interval, reads and writes paths in the run directory,
and returns a small JSON-able dict (paths and counts) for XCom. Steps are idempotent for an
interval: a rerun overwrites its own partition and nothing else.

    ingest            raw/service_requests/requests.csv -> clean + quarantine partitions
    aggregate         clean partition -> staged weekly district x type table, as the release
                      policy (privacy/policy.yaml) says: differentially private per the
                      policy's privacy unit (requester by default, person-level: the input
                      must identify it; or an event-level unit such as request), spending
                      from that unit's account through the ledger's release protocol, at the
                      granularity level the policy's ladder chooses; or small-count
                      suppression with secondary suppression
    commit_partition  composition guard (privacy.guard, against the microdata and KPI releases
                      of the same period) + GX gate, then staged files -> outputs/<dataset>/dt=.../
                      (Parquet + CSV copy)
    publish           outputs partition -> the configured catalog (local by default)
    manifest          row counts, input hashes, parameters, code version

A week without input rows publishes nothing and spends nothing: every step returns
``{"skipped": True, "reason": ...}`` and logs why.
"""

from __future__ import annotations

import io
import itertools
import json
import logging
import math
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from opencity import release
from opencity.errors import ConfigError, DataQualityError
from opencity.io import (
    STATEMENT_FILE,
    PrivacyStatement,
    read_reference_csv,
    read_statement,
    write_bytes_atomic,
    write_csv_atomic,
    write_parquet_atomic,
)
from opencity.manifest import input_hashes, write_run_manifest
from opencity.release import Committed, ProductSpec, Staged, Step, as_staged
from opencity.settings import Settings, partition_name
from privacy.suppression import (
    SmallCountSuppression,
    secondary_suppression,
    suppress_small_counts,
)
from publish.base import DatasetRelease, Field, Resource
from publish.frictionless import dictionary_fields
from transforms.schemas import AGENCIES, DISTRICTS, SERVICE_REQUEST_TYPES, SERVICE_REQUESTS

log = logging.getLogger(__name__)

SOURCE = "service_requests"
DATASET = "opencity-311-requests-weekly"
MICRODATA_DATASET = "opencity-311-requests-microdata"
KPI_DATASET = "opencity-kpis"
KEYS = ("district_id", "request_type")
#: The clean column identifying each person-level unit the 311 source can supply (the
#: pseudonym ingestion derives from the identifiers the input profile maps).
UNIT_COLUMNS = {"requester": "requester_pid"}
#: The event id of a request (the unit of an event-level release, e.g. unit ``request``).
EVENT_COLUMN = "request_id"
#: Granularity levels of the weekly table (policy ``granularity``): place x type x week, with
#: the same columns at every level: a coarser place is district_id 'all' (the whole city), a
#: coarser type is the request's category (its agency, from the public agency code list) or
#: 'all'. The level is stated in privacy.json, the Parquet metadata and the package metadata.
DEFAULT_LEVEL = "district x request_type x week"
LEVEL_PLACES = ("district", "city")
LEVEL_TYPES = ("request_type", "category", "all")
ALL = "all"
SKIPPED_REASON = "no input rows for the period: nothing published, no privacy budget spent"
DP_FIELDS = (
    Field("week_start", "date", "Monday (UTC) that starts the week of the requests"),
    Field("district_id", "string", "District identifier (see the districts reference table)"),
    Field("request_type", "string", "Type of service request"),
    Field("requests", "integer",
          "Number of requests, differentially private per requester (noise added; each "
          "requester counts at most a bounded number of requests); never withheld"),
    Field("requests_error_bound_95", "number",
          "|requests - true count after contribution bounding| <= this with probability 0.95"),
    Field("median_resolution_hours", "number",
          "City-wide median hours from creation to closure of this request type's closed "
          "requests in the week (DP histogram over public hour buckets; the same in every "
          "district row of the type); empty when the noisy number of closed requests is 0",
          unit="h"),
    Field("median_resolution_hours_error_bound_95", "number",
          "Approximate 95 % error bound of median_resolution_hours", unit="h"),
    Field("requests_noise_std", "number",
          "Standard deviation of the noise added to requests (and requests_unfloored)"),
    Field("requests_unfloored", "integer",
          "The noisy count of requests before the floor at 0 (can be negative); unbiased: "
          "sum this column, not requests, for totals"),
    Field("median_resolution_hours_noise_std", "number",
          "Approximate standard error of median_resolution_hours (its 95 % bound / 1.96)",
          unit="h"),
)
Z95 = 1.959963984540054
#: What is done to the noisy values after the noise (post-processing: no privacy cost), and
#: what it does to sums. Stated in privacy.json, the package metadata and the data dictionary.
POST_PROCESSING = {
    "requests": "integer (geometric) noise; negative noisy counts are floored at 0. The floor "
                "biases sums of requests upward (most on sparse tables, where many cells are "
                "near 0); sum requests_unfloored (the same noisy count before the floor, which "
                "can be negative) for unbiased totals",
    "median_resolution_hours": "median of a noisy histogram over public hour buckets (negative "
                               "bucket counts treated as 0), linear inside the bucket; empty "
                               "when the noisy number of closed requests is 0",
    "contribution_bounding": "each requester counts at most max_rows_per_cell request(s) in "
                             "at most max_cells cells before noise: the counts estimate the "
                             "bounded number of requests, which is at most the true number",
}
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


def source_config(profile: str | None = None, raw_path: str | None = None):
    """(registry entry, profile) of the 311 source: the source registry's service_requests
    entry (OPENCITY_SOURCES_FILE / ``opencity run --config``), unless the caller names a
    profile (and raw file) explicitly."""
    from opencity.source_registry import for_source, require_source
    from transforms.profiles import get_profile

    src = for_source(SOURCE) if profile and raw_path else require_source(SOURCE)
    return src, get_profile(SOURCE, profile or (src.profile if src else "opencity"))


def city_reference(settings: Settings, prof=None) -> dict[str, Any]:
    """The city's public 311 reference data: districts table (district_id, name, ...),
    request types (the public key set) and the files they come from.

    From the profile's reference files (``districts:`` / ``categories:``) when it gives them,
    else ``<raw>/city/districts.csv`` and the schema's request types (the synthetic city).
    """
    if prof is None:
        prof = source_config()[1]
    files: list[Path] = []
    if prof.districts:
        districts = pa.table({"district_id": [i for i, _ in prof.districts],
                              "name": [n for _, n in prof.districts]})
        files.append(Path(prof.file))
    else:
        csv_path = Path(settings.raw_dir) / "city" / "districts.csv"
        districts = read_reference_csv(csv_path, DISTRICTS)
        files.append(csv_path)
    types = prof.category_ids or SERVICE_REQUEST_TYPES
    return {"districts": districts, "request_types": tuple(types), "files": files,
            "categories": prof.categories, "profile": prof}


def write_reference_lists(settings: Settings, prof) -> Path:
    """The profile's public reference lists as the reference publisher reads them
    (publish/reference.py): ``<run_dir>/reference/districts.csv`` (district_id, name) and
    ``request_types.csv`` (request_type, name), so the catalog names every code."""
    folder = settings.layout.root / "reference"
    if prof.districts:
        write_csv_atomic(pa.table({"district_id": [i for i, _ in prof.districts],
                                   "name": [n for _, n in prof.districts]}),
                         folder / "districts.csv")
    if prof.categories:
        write_csv_atomic(pa.table({"request_type": [i for i, _ in prof.categories],
                                   "name": [n for _, n in prof.categories]}),
                         folder / "request_types.csv")
    return folder


def ingest(settings: Settings, start: datetime, end: datetime, key=None,
           profile: str | None = None, raw_path: str | None = None) -> dict[str, Any]:
    """Ingest the raw 311 rows of [start, end) into the clean partition.

    The raw file and the profile come from the source registry's service_requests entry
    (path relative to the raw folder) unless given.
    """
    from opencity.secrets import resolve_hmac_key
    from transforms.ingest import Reference, ingest_file

    layout = settings.layout
    src, prof = source_config(profile, raw_path)
    raw = Path(raw_path) if raw_path else Path(settings.raw_dir) / src.path
    ref = city_reference(settings, prof)
    # District ids are checked against the profile's reference list (a domain) when it has
    # one; the synthetic city's districts.csv also maps coordinates to districts.
    reference = Reference(districts=None if prof.districts else ref["districts"])
    result = ingest_file(
        SOURCE, raw, layout.clean(SOURCE, start),
        quarantine_dir=layout.quarantine(SOURCE, start),
        key=key or resolve_hmac_key(), interval=(start, end), reference=reference,
        profile=prof,
    )
    out = result.as_dict()
    # An interval without input fails here, with that message, leaving no empty partition.
    from opencity.pipelines.partitions import require_input

    require_input(out, SOURCE, start, end, layout.clean(SOURCE, start))
    if prof.districts or prof.categories:
        write_reference_lists(settings, prof)
    out["interval"] = _interval_dict(start, end)
    out["profile"] = prof.name
    out["input_hashes"] = input_hashes([raw, *ref["files"]])
    if out["rows_out"] == 0 and out["rows_quarantined"] == 0:
        # No request of this week at all: nothing to validate, publish or spend.
        return {**out, **_skipped(SOURCE, start)}
    out["validation"] = _validate_clean(settings, out, start, end, ref["districts"], prof)
    return out


def _validate_clean(settings: Settings, out: dict[str, Any], start: datetime, end: datetime,
                    districts, profile: Any = "opencity") -> dict[str, Any]:
    """GX gate on the clean partition (expectations.service_requests); rows failing row-level
    expectations move to the quarantine and the counts in ``out`` are adjusted to reconcile."""
    from expectations.gate import validate_or_raise
    from transforms.profiles import get_profile

    layout = settings.layout
    summary = validate_or_raise(
        SOURCE, out["clean_path"], reports_dir=layout.reports(SOURCE, start),
        context={"interval": (start, end), **_district_context(districts, profile),
                 "previous_partition": layout.clean(SOURCE, start),
                 "quarantine_dir": layout.quarantine(SOURCE, start),
                 "schema": SERVICE_REQUESTS,
                 "profile": profile if not isinstance(profile, str)
                 else get_profile(SOURCE, profile)})
    moved = summary["rows_quarantined"]
    if moved:
        out["rows_out"] -= moved
        out["rows_quarantined"] += moved
        out["quarantine_path"] = out["quarantine_path"] or str(layout.quarantine(SOURCE, start))
        for reason, n in summary["reasons"].items():
            out["reasons"][reason] = out["reasons"].get(reason, 0) + n
    return summary


def _district_context(districts: pa.Table, profile: Any) -> dict[str, Any]:
    """GX context of the districts: the ids, and the city box (the profile's bbox when the
    districts come from a profile's reference list without boxes)."""
    if "lat_min" in districts.column_names:
        return {"districts": districts, "bbox": "districts"}
    box = getattr(profile, "bbox", None)
    return {"districts": [str(d) for d in districts.column("district_id").to_pylist()],
            **({"bbox": {"lat_min": box.lat_min, "lat_max": box.lat_max,
                         "lon_min": box.lon_min, "lon_max": box.lon_max}} if box else {})}


@dataclass(frozen=True)
class WeeklyDPConfig:
    """How the weekly DP table spends its per-release epsilon (from the policy).

    Attributes:
        epsilon: per requester, this release (the policy's per-release epsilon).
        count_share: share of epsilon for the district x type counts; the rest goes to the
            median histogram.
        max_cells: L0, cells (district x type) one requester counts in.
        max_rows_per_cell: L-inf, requests one requester counts in one cell.
        bucket_edges_h: public hour buckets of the median histogram (start at 0, increasing).
    """

    epsilon: float
    count_share: float = 0.75
    max_cells: int = 2
    max_rows_per_cell: int = 1
    bucket_edges_h: tuple[float, ...] = (0, 2, 4, 8, 12, 16, 20, 24, 30, 36, 48, 72, 96, 144,
                                         240, 720)

    def __post_init__(self) -> None:
        if not (isinstance(self.epsilon, (int, float)) and math.isfinite(self.epsilon)
                and self.epsilon > 0):
            raise ConfigError(f"WeeklyDPConfig.epsilon must be a finite number > 0, got "
                              f"{self.epsilon!r}")
        if not 0 < self.count_share < 1:
            raise ConfigError(f"WeeklyDPConfig.count_share must be in (0, 1), got "
                              f"{self.count_share!r}")
        for name in ("max_cells", "max_rows_per_cell"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"WeeklyDPConfig.{name} must be an integer >= 1, got {v!r}")
        e = self.bucket_edges_h
        if len(e) < 3 or e[0] != 0 or any(b <= a for a, b in itertools.pairwise(e)):
            raise ConfigError("WeeklyDPConfig.bucket_edges_h must start at 0 and increase")


def public_keys(districts: pa.Table,
                request_types: tuple[str, ...] | None = None) -> pa.Table:
    """The public key set: districts (reference table) x request types (the profile's
    categories; default: the schema's domain)."""
    request_types = request_types or SERVICE_REQUEST_TYPES
    ids = sorted(str(d) for d in districts.column("district_id").to_pylist())
    return pa.table({"district_id": [d for d in ids for _ in request_types],
                     "request_type": [t for _ in ids for t in request_types]})


def parse_level(level: str, where: str = f"datasets.{DATASET}.granularity"
                ) -> tuple[str, str]:
    """(place, type) of a weekly-table level 'PLACE x TYPE x week'.

    Raises:
        ConfigError: a level this table cannot publish (names the policy key and the
            supported levels).
    """
    tokens = [t.strip() for t in str(level).split(" x ")]
    if (len(tokens) != 3 or tokens[0] not in LEVEL_PLACES or tokens[1] not in LEVEL_TYPES
            or tokens[2] != "week"):
        raise ConfigError(
            f"release policy {where}: {level!r} is not a level of {DATASET}; supported: "
            f"PLACE x TYPE x week with PLACE one of {', '.join(LEVEL_PLACES)} and TYPE one of "
            f"{', '.join(LEVEL_TYPES)} (e.g. {DEFAULT_LEVEL!r}, 'city x category x week')")
    return tokens[0], tokens[1]


def level_keys(level: str, districts: pa.Table,
               request_types: tuple[str, ...] = SERVICE_REQUEST_TYPES,
               categories: tuple[str, ...] = AGENCIES) -> pa.Table:
    """The public key set of ``level``: (districts or 'all') x (types, categories or 'all');
    from public reference data and code lists only."""
    place, kind = parse_level(level)
    types = {"request_type": tuple(request_types), "category": tuple(categories),
             "all": (ALL,)}[kind]
    if place == "city":
        return pa.table({"district_id": [ALL] * len(types), "request_type": list(types)})
    return public_keys(districts, types)


def dp_weekly_table(clean: pa.Table, districts: pa.Table, week_start: datetime,
                    cfg: WeeklyDPConfig, *, seed: int, random_state: Any = None,
                    unit: Any = None, unit_column: str | None = None,
                    supplied_units: dict[str, str] | None = None,
                    level: str = DEFAULT_LEVEL,
                    request_types: tuple[str, ...] = SERVICE_REQUEST_TYPES,
                    categories: tuple[str, ...] = AGENCIES,
                    ) -> tuple[pa.Table, dict[str, Any]]:
    """The weekly 311 table, differentially private per privacy unit (pure).

    * Unit: the policy's ``unit`` (a :class:`privacy.policy.UnitBudget`; default the
      person-level requester). A person-level unit needs its column in ``clean`` with values
      (privacy.units.bind_unit; else ConfigError naming the two fixes); a request without
      an identifier is then its own unit, and the statement counts them. An event-level unit
      (e.g. request) is each request's own id, bounded to one contribution (L0 = L-inf = 1).
    * Counts: DP count per cell of ``level``'s public key set (default district x request
      type); each unit counts at most ``max_rows_per_cell`` requests in at most
      ``max_cells`` cells (hash-sampled with ``seed``); epsilon x count_share. Every key is
      published, zero cells included; nothing is withheld.
    * Median resolution: per type key of the level (city-wide, a coarser statistic than the
      cell), from a DP histogram of closed requests over public hour buckets; each unit
      counts one closed request; epsilon x (1 - count_share). Linear interpolation inside
      the bucket (kpi.compute.histogram_median).

    Returns:
        (table with the DP_FIELDS columns, its :class:`opencity.io.PrivacyStatement`:
        epsilon/delta per person of the unit, one product per statistic). The table's schema
        metadata names the level and the unit.
    """
    import types as _types

    import duckdb

    from kpi.compute import histogram_median
    from privacy.dp import ContributionBounds, DPBudget, dp_count
    from privacy.dp import release_info as dp_info
    from privacy.units import bind_unit

    unit = unit if unit is not None else _types.SimpleNamespace(name="requester",
                                                                level="person")
    column = unit_column if unit_column is not None else UNIT_COLUMNS.get(str(unit.name))
    binding = bind_unit(clean, dataset=DATASET, unit=unit, column=column,
                        supplied=supplied_units)
    if binding.level == "event":
        cfg = replace(cfg, max_cells=1, max_rows_per_cell=1)
    place, kind = parse_level(level)
    keys = level_keys(level, districts, request_types, categories)
    place_sql = "'all'" if place == "city" else "CAST(district_id AS VARCHAR)"
    if kind == "all":
        type_sql = "'all'"
    elif kind == "category":
        type_sql = ("CAST(agency AS VARCHAR)" if "agency" in clean.column_names
                    else "CAST(NULL AS VARCHAR)")
    else:
        type_sql = "request_type"
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.register("clean", clean)
        base = con.sql(
            f"""SELECT {binding.sql(EVENT_COLUMN)} AS u,
                      {place_sql} AS district_id, {type_sql} AS request_type,
                      CASE WHEN closed_at IS NOT NULL AND created_at IS NOT NULL
                           THEN greatest(date_diff('second', created_at, closed_at), 0) / 3600.0
                      END AS hours
               FROM clean""").to_arrow_table()
    finally:
        con.close()
    eps_c = cfg.epsilon * cfg.count_share
    eps_m = cfg.epsilon - eps_c
    counts = dp_count(base, unit="u", by=list(KEYS), budget=DPBudget(eps_c),
                      bounds=ContributionBounds(cfg.max_cells, cfg.max_rows_per_cell),
                      public_keys=keys, seed=seed, random_state=random_state,
                      with_unclamped=True)
    edges = [float(e) for e in cfg.bucket_edges_h]
    nb = len(edges) - 1
    closed = base.filter(pa.compute.is_valid(base.column("hours")))
    hours = [min(h, edges[-1] - 1e-9) for h in closed.column("hours").to_pylist()]
    import numpy as np

    bucket = np.clip(np.searchsorted(edges, hours, side="right") - 1, 0, nb - 1)
    closed = closed.append_column("bucket", pa.array(bucket.tolist(), pa.int64()))
    types = list(dict.fromkeys(keys.column("request_type").to_pylist()))
    hist_keys = pa.table({"request_type": [t for t in types for _ in range(nb)],
                          "bucket": [b for _ in types for b in range(nb)]})
    hist = dp_count(closed, unit="u", by=["request_type", "bucket"], budget=DPBudget(eps_m),
                    bounds=ContributionBounds(1, 1), public_keys=hist_keys, seed=seed,
                    random_state=random_state)
    lookup = dict(zip(zip(hist.column("request_type").to_pylist(),
                          hist.column("bucket").to_pylist()), hist.column("value").to_pylist()))
    h = np.array([[float(lookup.get((t, b), 0)) for b in range(nb)] for t in types])
    std = float(hist.column("noise_std")[0].as_py()) if hist.num_rows else 0.0
    med, med_bound, _ = histogram_median(h, np.full(len(types), std), np.asarray(edges))
    med_by_type = {t: (None if not math.isfinite(m) else round(float(m), 3),
                       None if not math.isfinite(b) else round(float(b), 3))
                   for t, m, b in zip(types, med, med_bound)}
    ts = counts.column("request_type").to_pylist()
    table = pa.table({
        "week_start": pa.array([week_start.date()] * counts.num_rows, pa.date32()),
        "district_id": counts.column("district_id").cast(pa.string()),
        "request_type": counts.column("request_type").cast(pa.string()),
        "requests": counts.column("value").cast(pa.int64()),
        "requests_error_bound_95": counts.column("error_bound_95").cast(pa.float64()),
        "median_resolution_hours": pa.array([med_by_type[t][0] for t in ts], pa.float64()),
        "median_resolution_hours_error_bound_95": pa.array([med_by_type[t][1] for t in ts],
                                                           pa.float64()),
        "requests_noise_std": counts.column("noise_std").cast(pa.float64()),
        "requests_unfloored": counts.column("value_unclamped").cast(pa.int64()),
        "median_resolution_hours_noise_std": pa.array(
            [None if med_by_type[t][1] is None else round(med_by_type[t][1] / Z95, 3)
             for t in ts], pa.float64()),
    })
    published = sum(table.column("requests").to_pylist())
    unfloored = sum(table.column("requests_unfloored").to_pylist())
    releases = {"counts": {"epsilon": eps_c, **_short(dp_info(counts))},
                "median_histogram": {"epsilon": eps_m, **_short(dp_info(hist)),
                                     "bucket_edges_h": edges}}
    unit_statement = binding.statement()
    statement = PrivacyStatement(
        dataset=DATASET, partition=partition_name(week_start), method="differential_privacy",
        spent={binding.unit: {"epsilon": cfg.epsilon, "delta": 0.0}},
        products={name: _product(info, binding.unit) for name, info in releases.items()},
        details={
            **{k: v for k, v in unit_statement.items() if k != "privacy_unit"},
            "contribution_bounds": {"max_cells": cfg.max_cells,
                                    "max_rows_per_cell": cfg.max_rows_per_cell},
            "releases": releases,
            "key_set": _key_set_text(place, kind),
            "granularity": {"level": level},
            "post_processing": POST_PROCESSING,
            # Measured on this release's noisy values only (post-processing, no privacy cost).
            "post_processing_effect": {"sum_requests": published,
                                       "sum_requests_unfloored": unfloored,
                                       "zero_floor_bias": published - unfloored},
        })
    table = table.replace_schema_metadata({
        "opencity.granularity": level, "opencity.privacy_unit": binding.unit,
        "opencity.privacy_unit_level": binding.level})
    return table, statement


def _key_set_text(place: str, kind: str) -> str:
    where = ("districts reference table" if place == "district"
             else "the whole city (district_id 'all')")
    what = {"request_type": "request types of the input profile's code list",
            "category": "request categories (the agency code list; request_type holds the "
                        "category)",
            "all": "all request types together (request_type 'all')"}[kind]
    return f"public: {where} x {what}"


def _short(info: dict[str, Any]) -> dict[str, Any]:
    return {k: info[k] for k in ("statistic", "bounds", "mechanisms", "key_source") if k in info}


def _product(release: dict[str, Any], unit: str) -> dict[str, Any]:
    """A statement's product entry of one statistic of the weekly table (same keys as every
    DP product: mechanism, epsilon, delta, statistic, bounds, key source, file)."""
    mechanisms = release.get("mechanisms") or {}
    return {"mechanism": ", ".join(sorted({str(m.get("mechanism"))
                                           for m in mechanisms.values()})) or None,
            "epsilon": release["epsilon"], "delta": 0.0,
            "statistic": release.get("statistic"), "bounds": release.get("bounds") or {},
            "selection_threshold": None, "key_source": release.get("key_source"),
            "privacy_unit": unit, "file": "part-0.parquet"}


def _policy_entry(settings: Settings):
    """The weekly dataset's policy entry, tightened by the settings (never loosened)."""
    from privacy.policy import load_policy

    entry = load_policy().dataset(DATASET)
    if entry.method == "small_count_suppression":
        entry = entry.tightened(threshold=settings.suppression_k)
    elif entry.method != "differential_privacy":
        raise ConfigError(f"release policy: datasets.{DATASET}.method must be "
                          "differential_privacy or small_count_suppression, got "
                          f"{entry.method!r}")
    return entry


def _state_url(settings: Settings) -> str:
    return str(settings.state_url)


def _is_skipped(*steps: dict[str, Any] | None) -> bool:
    return any(bool(s and s.get("skipped")) for s in steps)


def _skipped(what: str, start: datetime) -> dict[str, Any]:
    log.warning("%s %s: %s", what, partition_name(start), SKIPPED_REASON)
    return {"skipped": True, "reason": SKIPPED_REASON, "partition": partition_name(start)}


def aggregate(settings: Settings, ingested: dict[str, Any], start: datetime,
              random_state: Any = None) -> dict[str, Any]:
    """The weekly district x type table, as the policy says, staged for commit.

    DP (policy method differential_privacy): through the ledger's release protocol, so a
    rerun of a recorded week replays the recorded bytes and spends nothing more; the
    requester account pays the policy's per-release epsilon. Suppression: small-count
    suppression at the policy's threshold plus secondary suppression.
    """
    if _is_skipped(ingested):
        return _skipped(DATASET, start)
    ref = city_reference(settings)
    districts = ref["districts"]
    entry = _policy_entry(settings)
    staging = settings.layout.output(DATASET, start).with_name(
        f".{partition_name(start)}.staging")
    clean = pq.read_table(ingested["clean_path"])
    if entry.method == "differential_privacy":
        return _aggregate_dp(settings, entry, clean, ref, start, staging, random_state,
                             ingested)
    from privacy.policy import load_policy
    from privacy.units import bind_unit
    from transforms.service_requests import weekly_requests

    # The threshold counts distinct units: a person-level unit must be identified (or fail).
    unit = load_policy().unit(entry.unit)
    bind_unit(clean, dataset=DATASET, unit=unit, column=UNIT_COLUMNS.get(entry.unit),
              supplied=supplied_units(ingested, ref))

    counts = weekly_requests(clean, districts, start, ref["request_types"])
    rule = SmallCountSuppression(
        threshold=entry.threshold,
        count_columns=("requests", "median_resolution_hours"),
        unit_column="requesters",
    )
    released = secondary_suppression(suppress_small_counts(counts, rule), keys=KEYS,
                                     count_columns=rule.count_columns)
    write_parquet_atomic(released, staging / "part-0.parquet")
    n_suppressed = sum(released.column("suppressed").to_pylist())
    return {
        "staging_dir": str(staging),
        "method": entry.method,
        "rows": released.num_rows,
        "rows_suppressed": n_suppressed,
        "requests_in_clean": clean.num_rows,
        "requests_published": sum(
            v for v in released.column("requests").to_pylist() if v is not None),
        "cells_suppressed_requests": sum(
            v for v, s in zip(counts.column("requests").to_pylist(),
                              released.column("suppressed").to_pylist()) if s and v),
        "unmatched_requests": clean.num_rows - sum(counts.column("requests").to_pylist()),
        "suppression": {"threshold": rule.threshold, "unit": "distinct requesters",
                        "secondary": True},
    }


def supplied_units(ingested: dict[str, Any], ref: dict[str, Any]) -> Any:
    """The units the input profile declares (``units:`` of the profile), else what the
    ingest step recorded; None = not declared (the data's columns decide)."""
    declared = ref["profile"].units
    return declared if declared else ingested.get("units")


def key_domains(profile: Any) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(request types, categories) of the input profile (a transforms.profiles.Profile):
    its public categories or code lists, else the schema's (the canonical 'opencity'
    profile); the public type keys of every level."""
    return (tuple(profile.category_ids or profile.domain("request_type")
                  or SERVICE_REQUEST_TYPES),
            tuple(profile.domain("agency") or AGENCIES))


def published_totals(settings: Settings, before: datetime) -> list[float]:
    """The earlier published noisy totals of the weekly table (sum of requests_unfloored of
    each committed partition before ``before``, oldest first): public information."""
    root = settings.layout.output(DATASET, before).parent
    out = []
    if not root.is_dir():
        return out
    for part in sorted(root.glob("dt=*")):
        if part.name >= partition_name(before):
            continue
        f = part / "part-0.parquet"
        if not f.is_file():
            continue
        try:
            col = pq.read_table(f, columns=["requests_unfloored"]).column(0)
        except (KeyError, pa.ArrowInvalid):
            continue  # a small-count-suppressed week: no unbiased noisy total
        out.append(float(sum(v for v in col.to_pylist() if v is not None)))
    return out


def choose_granularity(settings: Settings, entry, cfg: WeeklyDPConfig, districts: pa.Table,
                       start: datetime, request_types: tuple[str, ...],
                       categories: tuple[str, ...]):
    """The policy's ladder applied to this week (privacy.granularity.choose_level), from
    public information only: noise scale, public cells per level, earlier published totals.
    None when the policy declares no ladder."""
    from privacy.granularity import choose_level

    if not entry.granularity:
        return None
    levels = []
    for i, level in enumerate(entry.granularity):
        parse_level(level, f"datasets.{DATASET}.granularity[{i}]")
        levels.append((level, level_keys(level, districts, request_types,
                                         categories).num_rows))
    eps_c = cfg.epsilon * cfg.count_share
    return choose_level(levels, target=entry.target_relative_error,
                        epsilon_per_cell=eps_c / cfg.max_cells,
                        sensitivity=cfg.max_rows_per_cell,
                        history_totals=published_totals(settings, start))


def _earlier_statement(doc: dict[str, Any], part: str, policy_hash: str) -> PrivacyStatement:
    """The statement of a weekly release the ledger recorded before the statement had one
    type: this producer's own earlier layout (unit, epsilon, delta and the statistics under
    ``releases`` at the top level), read as such."""
    where = f"{DATASET} {part} recorded privacy statement"
    own = ("privacy_method", "privacy_unit", "epsilon", "delta", "releases")
    missing = [k for k in own if k not in doc]
    if missing:
        raise DataQualityError(f"{where}: not a weekly release statement (missing {missing}); "
                               "this is a bug or a damaged state database")
    unit = str(doc["privacy_unit"])
    return PrivacyStatement(
        dataset=DATASET, partition=part, method=doc["privacy_method"],
        spent={unit: {"epsilon": doc["epsilon"], "delta": doc["delta"]}},
        products={name: _product(info, unit) for name, info in doc["releases"].items()},
        details={k: v for k, v in doc.items() if k not in own[:4]},
        policy_hash=policy_hash)


def _aggregate_dp(settings: Settings, entry, clean: pa.Table, ref: dict[str, Any],
                  start: datetime, staging: Path, random_state: Any,
                  ingested: dict[str, Any]) -> dict[str, Any]:
    from privacy.dp import Ledger
    from privacy.policy import load_policy
    from privacy.units import bind_unit

    districts = ref["districts"]
    unit = load_policy().unit(entry.unit)
    column = UNIT_COLUMNS.get(entry.unit)
    supplied = supplied_units(ingested, ref)
    # Before the ledger: a release that cannot bound its unit fails without touching it.
    bind_unit(clean, dataset=DATASET, unit=unit, column=column, supplied=supplied)
    cfg = weekly_config(entry)
    request_types, categories = key_domains(ref["profile"])
    choice = choose_granularity(settings, entry, cfg, districts, start, request_types,
                                categories)
    level = choice.level if choice is not None else DEFAULT_LEVEL
    part = partition_name(start)

    def compute():
        table, statement = dp_weekly_table(
            clean, districts, start, cfg, seed=settings.seed, random_state=random_state,
            unit=unit, unit_column=column, supplied_units=supplied, level=level,
            request_types=request_types, categories=categories)
        statement = replace(statement, policy_hash=ledger.policy.hash)
        if choice is not None:
            statement = replace(statement, details={
                **statement.details, "granularity": {"level": level, **choice.as_dict()}})
        table = table.replace_schema_metadata({
            **(table.schema.metadata or {}),
            b"opencity.profile": str(ingested.get("profile") or "opencity")})
        buf = io.BytesIO()
        pq.write_table(table, buf)
        return statement.to_dict(), {"part-0.parquet": buf.getvalue(),
                                     STATEMENT_FILE: statement.to_bytes()}

    ledger = Ledger(_state_url(settings))
    outcome = ledger.release(DATASET, part, start.date(), {entry.unit: entry.budget}, compute)
    artifacts = dict(outcome.artifacts)
    recorded = json.loads(artifacts[STATEMENT_FILE])  # the recorded one on a rerun
    if "statement_version" not in recorded:  # recorded before the statement had one type
        artifacts[STATEMENT_FILE] = _earlier_statement(recorded, part,
                                                       outcome.record.policy_hash).to_bytes()
    for name, content in artifacts.items():
        write_bytes_atomic(content, staging / name)  # staging: restricted, owner-only
    table = pq.read_table(staging / "part-0.parquet")
    spend = outcome.record.spend_for(entry.unit)
    statement = PrivacyStatement.from_dict(
        json.loads(artifacts[STATEMENT_FILE]),
        where=f"{DATASET} {part} recorded privacy statement").to_dict()
    return {
        "staging_dir": str(staging),
        "method": entry.method,
        "rows": table.num_rows,
        "rows_suppressed": 0,
        "requests_in_clean": clean.num_rows,
        "requests_published": sum(table.column("requests").to_pylist()),
        "reused_release": outcome.reused,
        "ledger": {"release_pk": outcome.record.id, "unit": entry.unit,
                   "period": spend.period, "epsilon": spend.epsilon, "delta": spend.delta,
                   "policy_hash": outcome.record.policy_hash},
        "dp": {"epsilon": cfg.epsilon, "count_share": cfg.count_share,
               "max_cells": cfg.max_cells, "max_rows_per_cell": cfg.max_rows_per_cell},
        "privacy_unit": statement.get("privacy_unit"),
        "privacy_unit_level": statement.get("privacy_unit_level"),
        "rows_without_unit_identifier": statement.get("rows_without_unit_identifier"),
        "granularity": {k: v for k, v in (statement.get("granularity") or {}).items()
                        if k in ("level", "ladder", "target_relative_error", "target_met",
                                 "history_releases")},
        "post_processing_effect": statement.get("post_processing_effect"),
    }


def _published_table(settings: Settings, dataset: str, start: datetime,
                     name: str = "part-0.parquet") -> pa.Table | None:
    path = settings.layout.output(dataset, start) / name
    return pq.read_table(path) if path.exists() else None


def guard_period(settings: Settings, start: datetime, *, weekly: pa.Table | None,
                 microdata: pa.Table | None, new_dataset: str) -> dict[str, Any]:
    """Run the composition guard over the 311 releases of one source week (the new one and
    what is already in outputs/), write reports/<new_dataset>/dt=.../guard.json, and raise
    GuardError when a check fails. Returns the report dict."""
    from privacy import guard as g
    from privacy.policy import load_policy

    policy = load_policy()
    considered = [d for d, t in ((DATASET, weekly), (MICRODATA_DATASET, microdata))
                  if t is not None]
    checks = []
    md_margins = []
    if microdata is not None:
        md_entry = policy.dataset(MICRODATA_DATASET)
        # Settings may only tighten (a looser k or l is refused here too); the run's tighter
        # k, l apply to a new microdata release, a published one is checked at the policy's.
        run_entry = md_entry.tightened(k=settings.microdata_k, l=settings.microdata_l)
        if new_dataset == MICRODATA_DATASET:
            md_entry = run_entry
        checks.append(g.microdata_classes(microdata, sensitive=md_entry.sensitive,
                                          k=md_entry.k, l=md_entry.l,
                                          policy_columns=md_entry.published_columns))
        md_margins.append(g.margins_from_records(microdata, KEYS))
    if weekly is not None:
        entry = _policy_entry(settings)
        extra = sorted(set(weekly.column_names) - set(entry.published_columns))
        checks.append(g.Check("published_columns", not extra,
                              {"columns_not_in_policy": extra,
                               "columns": list(weekly.column_names)}))
        if "suppressed" in weekly.column_names:
            checks.append(g.withheld_cells(weekly, keys=KEYS, count="requests",
                                           threshold=entry.threshold or 2,
                                           margins=md_margins))
        else:
            checks.append(g.dp_cells(weekly, keys=KEYS, count="requests",
                                     error_bound="requests_error_bound_95",
                                     public_keys=_published_level_keys(
                                         weekly, city_reference(settings)),
                                     margins=md_margins))
    month = start.replace(day=1)
    kpis = _published_table(settings, KPI_DATASET, month, "kpis.parquet")
    if kpis is not None:
        considered.append(KPI_DATASET)
        checks.append(g.kpi_rows(kpis, person_sources=("service_requests",)))
    report = g.guard(new_dataset, partition_name(start), checks, considered)
    path = report.write(settings.layout.reports(new_dataset, start) / "guard.json")
    from opencity.errors import GuardError

    try:
        report.raise_if_failed(path)
    except GuardError as err:
        others = [d for d in considered if d != new_dataset]
        if not others:
            raise
        # The one way a product's fate depends on another: say so.
        raise GuardError(f"{err}. The guard checked {new_dataset} together with "
                         f"{', '.join(others)} already published for this period: the refusal "
                         "comes from combining them, not from this release alone") from err
    return {"passed": True, "report": str(path),
            "checks": [c.name for c in report.checks], "releases_considered": considered}


def published_level(table: pa.Table) -> tuple[str, str]:
    """(granularity level, input profile) a weekly DP table was released at (its Parquet
    metadata; tables from before the ladder are the default level, canonical profile)."""
    meta = table.schema.metadata or {}
    level = meta.get(b"opencity.granularity", DEFAULT_LEVEL.encode()).decode()
    profile = meta.get(b"opencity.profile", b"opencity").decode()
    return level, profile


def _published_level_keys(table: pa.Table, ref: dict[str, Any]) -> pa.Table:
    """The public keys of the level ``table`` was published at, from the city's reference
    data (``city_reference``: its districts and its profile's code lists)."""
    level, _profile = published_level(table)
    return level_keys(level, ref["districts"], *key_domains(ref["profile"]))


def _guard(settings: Settings, staged: Staged, folder: Path, start: datetime) -> dict:
    """Composition guard: the weekly table with the microdata already in outputs/."""
    return guard_period(settings, start, weekly=pq.read_table(folder / "part-0.parquet"),
                        microdata=_published_table(settings, MICRODATA_DATASET, start),
                        new_dataset=DATASET)


def _validate_product(settings: Settings, staged: Staged, folder: Path,
                      start: datetime) -> dict[str, Any]:
    """GX gate on the staged weekly product; a failure stops the run before anything moves."""
    from expectations.gate import validate_or_raise

    parquet = folder / "part-0.parquet"
    ref = city_reference(settings)
    extra: dict[str, Any] = {}
    if staged.get("method") == "differential_privacy":
        keys = _published_level_keys(pq.read_table(parquet), ref)
        extra = {"districts": sorted(set(keys.column("district_id").to_pylist())),
                 "request_types": list(dict.fromkeys(keys.column("request_type").to_pylist()))}
        statement = read_statement(folder / STATEMENT_FILE)  # None: missing, the gate fails
        privacy = {"kind": "dp", "count_columns": ["requests"], "statement": statement,
                   "ledger_epsilon": staged["ledger"]["epsilon"],
                   "ledger_delta": staged["ledger"]["delta"]}
    else:
        privacy = {"kind": "suppressed", "count_columns": ["requests"],
                   "threshold": staged.get("suppression", {}).get("threshold",
                                                                  settings.suppression_k)}
    return validate_or_raise(
        DATASET, parquet, reports_dir=settings.layout.reports(DATASET, start),
        context={"interval": (start, start + timedelta(weeks=1)),
                 "districts": ref["districts"], "request_types": ref["request_types"],
                 "previous_partition": settings.layout.output(DATASET, start),
                 "privacy": privacy, **extra})


def release_for(settings: Settings, committed: Committed, start: datetime, end: datetime,
                provenance: dict) -> DatasetRelease:
    out = Path(committed.output_dir)
    part = partition_name(start)
    entry = _policy_entry(settings)
    if entry.method == "differential_privacy":
        from privacy.policy import load_policy
        from privacy.units import unit_phrase

        u = load_policy().unit(entry.unit)
        cfg = weekly_config(entry)
        stmt = read_statement(out / STATEMENT_FILE)
        details = stmt.details if stmt is not None else {}
        gran = details.get("granularity") or {"level": DEFAULT_LEVEL}
        floor = details.get("post_processing_effect") or {}
        bound = ("each request counts once (event-level unit: a person filing several "
                 "requests is not bounded as one person), in one cell" if u.is_event else
                 f"each {u.name} counts at most {cfg.max_rows_per_cell} request(s) in at most "
                 f"{cfg.max_cells} cells")
        return DatasetRelease(
            name=DATASET,
            title=f"311 service requests per district and type, weekly - {settings.city_name}",
            description=(
                "Weekly number of 311 service requests per district and request type, "
                f"differentially private per {unit_phrase(u.name, u.level)} (epsilon = "
                f"{cfg.epsilon:g} per {u.name} per week, from the {u.name} account's "
                f"portal-wide budget): {bound}, noise is added to every cell and its 95 % "
                "error bound is published next to it. Every cell of the public key set is "
                f"published; none is withheld. Granularity of this week: {gran['level']} "
                "(a coarser level has district_id 'all' for the whole city, or the request "
                "category or 'all' in request_type; chosen before the release from public "
                "information only, see privacy.json). Negative noisy counts are floored at "
                "0 in requests (sum requests_unfloored for unbiased totals"
                + (f"; this week the floor adds {floor['zero_floor_bias']} to the sum of "
                   "requests" if "zero_floor_bias" in floor else "")
                + "). The median resolution time is a city-wide DP median per type key. No "
                "personal data of requesters is published."
            ),
            resources=(
                Resource(out / "part-0.parquet", "requests-weekly", "parquet",
                         f"Week starting {start:%Y-%m-%d} (Parquet)", part),
                Resource(settings.layout.csv(DATASET, start) / "part-0.csv",
                         "requests-weekly-csv", "csv",
                         f"Week starting {start:%Y-%m-%d} (CSV copy)", part),
            ),
            fields=dictionary_fields(DATASET, DP_FIELDS, "differential_privacy"),
            privacy={"privacy_method": "differential_privacy", "privacy_unit": u.name,
                     "privacy_unit_level": u.level,
                     "epsilon_per_release": cfg.epsilon, "delta": 0.0,
                     "contribution_bounds": {"max_cells": cfg.max_cells,
                                             "max_rows_per_cell": cfg.max_rows_per_cell},
                     "dp_mechanisms": "Geometric (counts, median histogram)",
                     "granularity": gran["level"],
                     "post_processing": "zero floor on requests (requests_unfloored is "
                                        "unbiased)",
                     **({"zero_floor_bias": floor["zero_floor_bias"]}
                        if "zero_floor_bias" in floor else {})},
            tags=("311", "service-requests", "kpi", "open-data", "differential-privacy"),
            temporal_coverage=(f"{start:%Y-%m-%d}", f"{end:%Y-%m-%d}"),
            spatial_coverage=settings.city_name,
            accrual_periodicity="R/P1W",
            provenance=provenance,
        )
    return DatasetRelease(
        name=DATASET,
        title=f"311 service requests per district and type, weekly - {settings.city_name}",
        description=(
            "Weekly number of 311 service requests per district and request type, with the "
            "median resolution time. Counts backed by fewer than "
            f"{entry.threshold} distinct requesters are withheld (empty) and flagged "
            "in the 'suppressed' column; no personal data of requesters is published."
        ),
        resources=(
            Resource(out / "part-0.parquet", "requests-weekly", "parquet",
                     f"Week starting {start:%Y-%m-%d} (Parquet)", part),
            Resource(settings.layout.csv(DATASET, start) / "part-0.csv", "requests-weekly-csv",
                     "csv",
                     f"Week starting {start:%Y-%m-%d} (CSV copy)", part),
        ),
        fields=dictionary_fields(DATASET, FIELDS, "small_count_suppression"),
        privacy={"privacy_method": "small_count_suppression",
                 "suppression_threshold": entry.threshold,
                 "secondary_suppression": True,
                 "privacy_unit": entry.unit},
        tags=("311", "service-requests", "kpi", "open-data"),
        temporal_coverage=(f"{start:%Y-%m-%d}", f"{end:%Y-%m-%d}"),
        spatial_coverage=settings.city_name,
        accrual_periodicity="R/P1W",
        provenance=provenance,
    )


def weekly_config(entry) -> WeeklyDPConfig:
    """The weekly DP table's config under a policy entry: an event-level unit (e.g. request)
    is bounded to one contribution (one request in one cell)."""
    from privacy.policy import load_policy

    if load_policy().unit(entry.unit).is_event:
        return WeeklyDPConfig(epsilon=entry.budget.epsilon, max_cells=1, max_rows_per_cell=1)
    return WeeklyDPConfig(epsilon=entry.budget.epsilon)


def release_params(settings: Settings) -> dict[str, Any]:
    """The privacy parameters of this week's release, for the release registry."""
    entry = _policy_entry(settings)
    if entry.method == "differential_privacy":
        cfg = weekly_config(entry)
        return {"epsilon": cfg.epsilon, "delta": 0.0,
                "count_share": cfg.count_share, "max_cells": cfg.max_cells,
                "max_rows_per_cell": cfg.max_rows_per_cell}
    return {"threshold": entry.threshold, "secondary_suppression": True}


def stage(settings: Settings, ingested: dict[str, Any], _prev: Staged | None,
          start: datetime, end: datetime) -> Staged:
    """The weekly table staged for the runner (:func:`aggregate`)."""
    return as_staged(DATASET, start, aggregate(settings, ingested, start))


WEEKLY = ProductSpec(
    dataset=DATASET,
    files=("part-0.parquet",),
    table="part-0.parquet",
    csv="part-0.csv",
    stages=(Step("aggregate", stage),),
    guard=_guard,
    gate=_validate_product,
    release=release_for,
    params=lambda settings, _committed: release_params(settings),
    commit_task="commit_partition",
    publish_task="publish_weekly",
    outlet="311_weekly",
)


def commit_partition(settings: Settings, staged: dict[str, Any], start: datetime) -> dict:
    """Guard + GX gate, then the staged table into outputs/<dataset>/dt=.../ (+ CSV copy):
    the release runner (:func:`opencity.release.commit`) on :data:`WEEKLY`."""
    return release.commit(WEEKLY, settings, as_staged(DATASET, start, staged),
                          start).to_xcom()


def publish(settings: Settings, committed: dict, start: datetime, end: datetime,
            run_id: str, ingested: dict) -> dict:
    """Registry check and record, then the catalog (:func:`opencity.release.publish`)."""
    return release.publish(WEEKLY, settings, Committed.from_xcom(committed), start, end,
                           run_id, ingested).to_xcom()


def manifest(settings: Settings, dag_id: str, run_id: str, start: datetime, end: datetime,
             ingested: dict, staged: dict, committed: dict, published: dict,
             extra: dict | None = None) -> str:
    path = settings.layout.manifest(dag_id, start)
    envelope = {"dag_id": dag_id, "run_id": run_id, "start": start, "end": end,
                "inputs": ingested.get("input_hashes", {}), "published": published}
    if _is_skipped(ingested, staged, committed):
        write_run_manifest(
            path, **envelope, release=False, status="skipped", reason=SKIPPED_REASON,
            row_counts={k: ingested.get(k) for k in ("rows_in", "rows_out",
                                                     "rows_quarantined",
                                                     "rows_other_intervals")},
            **(extra or {}),
        )
        log.info("manifest written (skipped period): %s", path)
        return str(path)
    write_run_manifest(
        path, **envelope,
        parameters={"method": staged.get("method"),
                    "suppression_k": staged.get("suppression", {}).get("threshold"),
                    "dp": staged.get("dp"), "ledger": staged.get("ledger"),
                    "privacy_unit": staged.get("privacy_unit"),
                    "privacy_unit_level": staged.get("privacy_unit_level"),
                    "granularity": staged.get("granularity"),
                    "publish_target": settings.publish_target},
        guard=committed.get("guard"),
        row_counts={
            "rows_in": ingested["rows_in"],
            "rows_clean": ingested["rows_out"],
            "rows_quarantined": ingested["rows_quarantined"],
            "rows_other_intervals": ingested["rows_other_intervals"],
            "product_rows": staged["rows"],
            "product_rows_suppressed": staged["rows_suppressed"],
        },
        quarantine={"path": ingested.get("quarantine_path"),
                    "reasons": ingested.get("reasons", {})},
        outputs={k: committed.get(k) for k in ("output_dir", "files", "rows", "validation",
                                                "guard", "method")},
        validation={"clean": ingested.get("validation"),
                    "product": committed.get("validation")},
        **(extra or {}),
    )
    log.info("manifest written: %s", path)
    return str(path)
