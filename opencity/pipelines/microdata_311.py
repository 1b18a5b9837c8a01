"""311 microdata release: one record per request, k-anonymous (privacy.kanon).

The released columns are exactly those the release policy lists for the dataset
(privacy/policy.yaml, ``datasets.opencity-311-requests-microdata.columns``), each one a
quasi-identifier (generalized by the optimal full-domain generalization: requester age band,
gender, district, day/week of the request, status), the sensitive attribute (request type,
l-diverse within every class) or not released at all. k, l and the suppression limit come from
the policy; settings may only tighten them. k and l count PERSONS (linked requester
pseudonyms, privacy.kanon.persons), not records, and a requester's records per release are
capped by the policy's max_records_per_person (first ones by creation time, then request
id) before the search. Records of classes that violate the model are
removed while their share stays within the suppression limit; when no generalization
satisfies the model the partition is not released (and the run says so). Before publication
the composition guard (privacy.guard) recounts every class over every published
non-sensitive column and checks the release against the weekly table of the same week.

Quasi-identifiers are those the input provides (:func:`provided_columns`): a city whose
profile maps no requester age or gender (every real 311 extract) gets district x day/week x
status microdata, and the statement lists the QIs used and those not provided. A city whose
release policy has no microdata entry, or ``enabled: false``, skips it (:func:`enabled`).

Task bodies behind the microdata branch of dags/opencity_311.py.
"""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from opencity import release
from opencity.errors import ConfigError, NotAchievableError
from opencity.io import (
    write_json_atomic,
    write_parquet_atomic,
)
from opencity.release import Committed, ProductSpec, Staged, Step, as_staged
from opencity.settings import Settings, partition_name
from publish.base import DatasetRelease, Field, Resource
from transforms.schemas import SERVICE_REQUESTS

log = logging.getLogger(__name__)

DATASET = "opencity-311-requests-microdata"
GENDERS = ("female", "male", "other")
# The privacy unit behind every record (never released): k and l count distinct units.
UNIT = "__requester_unit"
ORDER = ("__created_at", "__request_id")
STATUSES = next(c.allowed for c in SERVICE_REQUESTS.columns if c.name == "status")
# Every column this release knows how to build: clean source column and field description.
# The policy decides which of them are published and with which role.
SOURCES = {
    "age": "requester_age",
    "gender": "requester_gender",
    "district_id": "district_id",
    "created": "created_at",
    "status": "status",
    "request_type": "request_type",
}
_DESCRIPTIONS = {
    "age": ("string", "Requester age, generalized (interval or '*')"),
    "gender": ("string", "Requester gender, generalized ('*' when withheld)"),
    "district_id": ("string", "District, generalized ('*' when withheld)"),
    "created": ("string", "Day (YYYY-MM-DD) or ISO week (WYYYY-MM-DD) of the request"),
    "status": ("string", "Request status at extraction time, generalized ('*' when withheld)"),
    "request_type": ("string", "Type of service request (l-diverse in every class)"),
}


NOT_IN_POLICY = (f"{DATASET} is turned off by the city's release policy (no entry under "
                 "datasets, or enabled: false): not produced, nothing published")


def enabled(settings: Settings) -> bool:
    """Whether the city's release policy produces the microdata at all (an entry under
    ``datasets`` without ``enabled: false``)."""
    from privacy.policy import load_policy

    entry = load_policy().datasets.get(DATASET)
    return entry is not None and entry.enabled


def policy_entry(settings: Settings):
    """The microdata's policy entry, tightened by the settings (never loosened).

    Raises:
        ConfigError: a policy column this release cannot build, or a settings value that
            would loosen the policy.
    """
    from privacy.policy import load_policy

    entry = load_policy().dataset(DATASET)
    if entry.method != "k_anonymity":
        raise ConfigError(f"release policy: datasets.{DATASET}.method must be k_anonymity, got "
                          f"{entry.method!r}")
    unknown = [c for c in entry.published_columns if c not in SOURCES]
    if unknown:
        raise ConfigError(f"release policy: datasets.{DATASET}.columns lists {unknown}, which "
                          f"this release cannot build (known: {sorted(SOURCES)})")
    public = [c.name for c in entry.columns if c.role == "public"]
    if public:
        raise ConfigError(f"release policy: datasets.{DATASET}.columns {public} have role "
                          "public; a record-level release has only quasi_identifier and "
                          "sensitive columns (drop the others)")
    return entry.tightened(k=settings.microdata_k, l=settings.microdata_l,
                           max_suppression=settings.microdata_max_suppression)


def fields_for(entry, columns: tuple[str, ...] | None = None) -> tuple[Field, ...]:
    """The published fields, in the policy's order (only ``columns`` when given: the QIs the
    input provides)."""
    return tuple(Field(c, *_DESCRIPTIONS[c]) for c in entry.published_columns
                 if columns is None or c in columns)


def provided_columns(entry, clean: pa.Table, profile_columns=None) -> tuple[str, ...]:
    """The policy's columns this input can fill, in the policy's order.

    A column is provided when the input profile maps its clean source column
    (``profile_columns``: the canonical columns the profile maps), so the published columns
    are the same every week; a week whose rows lack a mapped value releases those rows
    not at all (they cannot be placed in a class). Without a known profile, a column is
    provided when the clean partition holds at least one value of it. A city without
    requester demographics (no real 311 extract has age or gender) thus gets time x place x
    type microdata, not an empty release. Dropping a quasi-identifier never weakens
    k-anonymity (every class only grows), and the statement lists the QIs used.
    """
    out = []
    for col in entry.published_columns:
        src = SOURCES[col]
        if src not in clean.column_names:
            continue
        if profile_columns is not None:
            if src not in profile_columns:
                continue
        elif clean[src].null_count == clean.num_rows:
            continue
        out.append(col)
    return tuple(out)


def _profile(ingested: dict[str, Any], registered=None):
    """The input profile the clean partition was read with: the source registry's profile
    (``registered``, the city's own file) when the partition names it or nothing, else the
    shipped profile the caller named explicitly; ``registered`` when that name is unknown."""
    name = ingested.get("profile")
    if not name or (registered is not None and registered.name == name):
        return registered
    from transforms.profiles import get_profile

    try:
        return get_profile("service_requests", str(name))
    except ConfigError:
        return registered


def _mapped(profile) -> set[str] | None:
    cols = getattr(profile, "columns", None)
    return set(cols) if isinstance(cols, dict) else None


def value_domains(profile, columns, district_ids=None) -> dict[str, list[str]]:
    """Allowed published values of the released string columns, from the input profile and
    the public district table ('*' = generalized away; the sensitive request type is never
    generalized): the suite checks every published value against them."""
    domains: dict[str, list[str]] = {}
    for col in columns:
        src = SOURCES[col]
        if col == "district_id":
            allowed = list(district_ids) if district_ids is not None else None
        elif src == "request_type" and getattr(profile, "category_ids", None):
            allowed = profile.category_ids  # the city's public categories
        elif profile is not None and hasattr(profile, "domain"):
            allowed = profile.domain(src)
        else:
            allowed = next((c.allowed for c in SERVICE_REQUESTS.columns if c.name == src),
                           None)
        if allowed:
            domains[col] = [str(v) for v in allowed] + ([] if col == "request_type" else ["*"])
    return domains


def microdata_table(clean: pa.Table, columns: tuple[str, ...] = tuple(SOURCES),
                    with_unit: bool = False) -> tuple[pa.Table, int]:
    """Project the clean 311 rows to the released ``columns`` (nothing else).

    With ``with_unit`` the table also carries :data:`UNIT` (the requester pseudonym, or the
    request id for a request without any identifier, as the weekly DP table counts them)
    and :data:`ORDER` (the creation time and the request id, which order a person's
    records for the cap); neither is released.

    Returns the table and the number of rows left out because a released attribute is
    missing (e.g. the requester gave no age): they cannot be placed in a class and are not
    released.
    """
    table = pa.table({c: clean[SOURCES[c]] for c in columns})
    if with_unit:
        table = table.append_column(UNIT, pc.coalesce(clean["requester_pid"],
                                                      clean["request_id"]))
        table = table.append_column(ORDER[0], clean["created_at"])
        table = table.append_column(ORDER[1], clean["request_id"])
    mask = None
    for col in columns:
        valid = pc.is_valid(table[col])
        mask = valid if mask is None else pc.and_(mask, valid)
    kept = table.filter(mask) if mask is not None else table
    return kept, table.num_rows - kept.num_rows


def anonymize_partition(settings: Settings, ingested: dict[str, Any], start: datetime,
                        end: datetime) -> dict[str, Any]:
    """Run the k-anonymity search on the interval's clean rows and stage the release."""
    from privacy.kanon import Hierarchy, KAnonymity, LDiversity, anonymize
    from privacy.kanon.persons import cap_per_unit

    if ingested.get("skipped"):
        log.warning("%s %s: %s", DATASET, partition_name(start), ingested.get("reason"))
        return {"released": False, "skipped": True, "reason": ingested.get("reason")}
    if not enabled(settings):
        log.warning("%s %s: %s", DATASET, partition_name(start), NOT_IN_POLICY)
        return {"released": False, "skipped": True, "reason": NOT_IN_POLICY}
    entry = policy_entry(settings)
    sensitive = entry.sensitive
    if len(sensitive) != 1:
        raise ConfigError(f"release policy: datasets.{DATASET} needs exactly one sensitive "
                          f"column, got {list(sensitive)}")
    from opencity.pipelines.service_requests import city_reference

    ref = city_reference(settings)  # the profile's lists, else city/
    clean = pq.read_table(ingested["clean_path"])
    profile = _profile(ingested, ref["profile"])
    columns = provided_columns(entry, clean, _mapped(profile))
    qis = tuple(q for q in entry.quasi_identifiers if q in columns)
    dropped = [q for q in entry.quasi_identifiers if q not in columns]
    if sensitive[0] not in columns:
        raise ConfigError(
            f"{DATASET}: the input (profile {ingested.get('profile') or 'opencity'!r}) does "
            f"not provide the sensitive column {sensitive[0]!r} "
            f"({SOURCES[sensitive[0]]}); map it in the profile or turn the microdata off "
            f"(enabled: false under datasets.{DATASET} in the release policy)")
    if not qis:
        reason = (f"the input provides none of the policy's quasi-identifiers "
                  f"{list(entry.quasi_identifiers)}: no microdata released")
        log.warning("311 microdata for %s not released: %s", partition_name(start), reason)
        return {"released": False, "reason": reason, "quasi_identifiers_dropped": dropped}
    if dropped:
        log.info("311 microdata for %s: quasi-identifier(s) %s not provided by the input; "
                 "released with %s", partition_name(start), dropped, list(qis))
    districts = ref["districts"]
    table, missing_qi = microdata_table(clean, columns, with_unit=True)
    cap = entry.max_records_per_person
    capped = {"rows_capped": 0, "units_capped": 0, "max_records_per_unit_before": None}
    if cap is not None:
        table, capped = cap_per_unit(table, UNIT, ORDER, cap)
    table = table.drop_columns(list(ORDER))
    all_hierarchies = {
        "age": Hierarchy.intervals(0, 120, (5, 10, 20)),
        "gender": Hierarchy.flat(GENDERS),
        "district_id": Hierarchy.flat(districts["district_id"].to_pylist()),
        "created": Hierarchy.timestamps(start, end, ("day", "week")),
        "status": Hierarchy.flat(STATUSES),
    }
    missing_h = [q for q in qis if q not in all_hierarchies]
    if missing_h:
        raise ConfigError(f"release policy: quasi-identifier(s) {missing_h} of {DATASET} have "
                          "no generalization hierarchy")
    hierarchies = {q: all_hierarchies[q] for q in qis}
    distinct = pc.count_distinct(table[sensitive[0]]).as_py() if table.num_rows else 0
    if table.num_rows and distinct < entry.l:
        # A sparse week (a small city, one request type): no class can be l-diverse. A
        # property of the week's data, not of the configuration: not released, not failed.
        table = table.slice(0, 0)
    if table.num_rows == 0:
        reason = ("no request of the week has every released attribute "
                  f"({', '.join(columns)}): nothing to anonymize" if not distinct else
                  f"the week's requests hold {distinct} request type(s), fewer than l = "
                  f"{entry.l}: no class can be l-diverse")
        log.warning("311 microdata for %s not released: %s", partition_name(start), reason)
        return {"released": False, "reason": reason, "rows_missing_quasi_identifier": missing_qi,
                "quasi_identifiers_dropped": dropped}
    model = KAnonymity(k=entry.k, quasi_identifiers=qis,
                       max_suppression=entry.max_suppression, unit=UNIT)
    ldiv = LDiversity(sensitive=sensitive[0], l=entry.l, variant="distinct")
    reports = settings.layout.reports(DATASET, start)
    reports.mkdir(parents=True, exist_ok=True)
    report_path = reports / "kanon-report.json"
    base = {"rows_in": table.num_rows, "rows_missing_quasi_identifier": missing_qi,
            "report_path": str(report_path), "max_records_per_person": cap,
            "rows_capped": capped["rows_capped"]}
    try:
        result = anonymize(table, hierarchies, model=model, metric="nu-entropy",
                           l_diversity=ldiv, suppression="remove")
    except NotAchievableError as err:
        write_json_atomic({"achievable": False, "reason": str(err)}, report_path,
                          restricted=True)
        log.warning("311 microdata for %s not released: %s", partition_name(start), err)
        return {**base, "released": False, "reason": str(err)}
    report = {**result.report, "rows_missing_quasi_identifier": missing_qi,
              "quasi_identifiers_dropped": dropped,
              "cap": {"max_records_per_person": cap, **capped}}
    write_json_atomic(report, report_path, restricted=True, sort_keys=True, default=str)
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
            "k": model.k, "l": ldiv.l, "suppression_limit": model.max_suppression,
            "k_counts": "persons", "min_persons": result.report["persons"]["min_persons"],
            "quasi_identifiers": list(qis), "sensitive": list(sensitive),
            "quasi_identifiers_dropped": dropped, "profile": ingested.get("profile"),
            "domains": value_domains(profile, columns,
                                     districts["district_id"].to_pylist()),
            "columns": list(released.column_names)}


_QI_WORDS = {"age": "the requester's age band", "gender": "the requester's gender",
             "district_id": "the district", "created": "the day or week of the request",
             "status": "its status"}


def _describe_qis(qis) -> str:
    words = [_QI_WORDS.get(q, q) for q in qis]
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"


def _guard(settings: Settings, staged: Staged, folder: Path, start: datetime) -> dict:
    """Composition guard: the records with the weekly table already in outputs/."""
    from opencity.pipelines import service_requests as weekly

    return weekly.guard_period(
        settings, start, weekly=weekly._published_table(settings, weekly.DATASET, start),
        microdata=pq.read_table(folder / "part-0.parquet"), new_dataset=DATASET)


def _gate(settings: Settings, staged: Staged, folder: Path, start: datetime) -> dict:
    """GX gate on the records: k counted over every published non-sensitive column, the
    published values within the profile's code lists and the public districts."""
    from expectations.gate import validate_or_raise
    from opencity.pipelines import service_requests as weekly

    entry = policy_entry(settings)
    parquet = folder / "part-0.parquet"
    columns = pq.read_schema(parquet).names
    return validate_or_raise(
        DATASET, parquet,
        context={"privacy": {"kind": "microdata",
                             # every published non-sensitive column, not only the QIs
                             "quasi_identifiers": [c for c in columns
                                                   if c not in entry.sensitive],
                             "k": staged["k"],
                             # published values: the profile's code lists and the
                             # public districts, for the columns released
                             "domains": {c: v for c, v in (staged.get("domains") or {})
                                         .items() if c in columns}},
                 "schema": SERVICE_REQUESTS,
                 "request_types": weekly.city_reference(settings)["request_types"]},
        reports_dir=settings.layout.reports(DATASET, start))


def release_for(settings: Settings, committed: Committed, start: datetime, end: datetime,
                provenance: dict) -> DatasetRelease:
    """The records' catalog entry: resources, fields, k-anonymity statement."""
    entry = policy_entry(settings)
    staged = committed
    final = Path(committed.output_dir)
    part = partition_name(start)
    return DatasetRelease(
        name=DATASET,
        title=f"311 service requests, anonymized records - {settings.city_name}",
        description=(
            "One record per 311 service request with "
            + _describe_qis(staged["quasi_identifiers"])
            + ", generalized so that every "
            f"combination is shared by the requests of at least {staged['k']} different "
            f"requesters (k-anonymity counted in persons, not records) and every group holds at "
            f"least {staged['l']} request types even without any one requester's requests "
            "(distinct l-diversity over persons). "
            + (f"At most {staged['max_records_per_person']} requests of one requester are "
               "released per week. " if staged.get("max_records_per_person") else "")
            + "Records that would need more generalization were removed within the "
            "suppression limit. Names, contacts, addresses and coordinates are never released."
            + (f" Not released because the city's data does not provide them: "
               f"{', '.join(staged['quasi_identifiers_dropped'])}."
               if staged.get("quasi_identifiers_dropped") else "")
        ),
        resources=(
            Resource(final / "part-0.parquet", "requests-microdata", "parquet",
                     f"Week starting {start:%Y-%m-%d} (Parquet)", part),
            Resource(settings.layout.csv(DATASET, start) / "part-0.csv",
                     "requests-microdata-csv", "csv",
                     f"Week starting {start:%Y-%m-%d} (CSV copy)", part),
        ),
        fields=fields_for(entry, tuple(staged.get("columns") or entry.published_columns)),
        privacy={
            "privacy_method": "k_anonymity",
            "k_anonymity_k": staged["k"],
            "l_diversity_l": staged["l"],
            "l_diversity_variant": "distinct",
            "k_anonymity_counts": "persons",
            "privacy_unit": entry.unit,
            **({"max_records_per_person": staged["max_records_per_person"]}
               if staged.get("max_records_per_person") else {}),
            "sensitive_attribute": staged["sensitive"][0],
            "quasi_identifiers": staged["quasi_identifiers"],
            **({"quasi_identifiers_not_provided": staged["quasi_identifiers_dropped"]}
               if staged.get("quasi_identifiers_dropped") else {}),
            "suppression_limit": staged["suppression_limit"],
            "suppressed_records": staged["suppressed_records"],
            "generalization": staged["generalization"],
        },
        tags=("311", "service-requests", "microdata", "k-anonymity"),
        temporal_coverage=(f"{start:%Y-%m-%d}", f"{end:%Y-%m-%d}"),
        spatial_coverage=settings.city_name,
        accrual_periodicity="R/P1W",
        provenance=provenance,
    )


def release_params(settings: Settings, committed: Committed) -> dict[str, Any]:
    """The k-anonymity parameters the release registry checks against the policy."""
    return {"k": committed["k"], "l": committed["l"],
            "max_suppression": committed["suppression_limit"],
            "quasi_identifiers": committed["quasi_identifiers"],
            "sensitive": committed["sensitive"][0], "k_counts": "persons",
            "max_records_per_person": committed.get("max_records_per_person")}


def stage(settings: Settings, ingested: dict[str, Any], _prev: Staged | None,
          start: datetime, end: datetime) -> Staged:
    """The week's records staged for the runner (:func:`anonymize_partition`)."""
    return as_staged(DATASET, start, anonymize_partition(settings, ingested, start, end))


MICRODATA = ProductSpec(
    dataset=DATASET,
    files=("part-0.parquet",),
    table="part-0.parquet",
    csv="part-0.csv",
    stages=(Step("anonymize_microdata", stage),),
    guard=_guard,
    gate=_gate,
    release=release_for,
    params=release_params,
    commit_task="commit_microdata",
    publish_task="publish_microdata",
    outlet="311_microdata",
)


def commit_and_publish(settings: Settings, staged: dict[str, Any], start: datetime,
                       end: datetime, run_id: str, input_hashes: dict) -> dict[str, Any]:
    """The release runner on :data:`MICRODATA` in one call (commit: guard + GX gate + move;
    then registry + catalog); nothing is published when the week released nothing."""
    s = as_staged(DATASET, start, staged)
    committed = release.commit(MICRODATA, settings, s, start)
    published = release.publish(MICRODATA, settings, committed, start, end, run_id,
                                {"input_hashes": input_hashes})
    return {**published.to_xcom(), "skipped": s.skipped, "output_dir": committed.output_dir,
            "validation": committed.validation, "guard": committed.guard}
