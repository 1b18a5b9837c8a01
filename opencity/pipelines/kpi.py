"""The monthly KPI pipeline: the task bodies behind dags/opencity_kpi.py.

    ingest            raw sources of the month -> clean/kpi_inputs/<source>/dt=YYYY-MM-01/
                      (typed, checked, pseudonymized by transforms.ingest; the KPI DAG reads the
                      raw landing area itself, so it does not depend on how the other DAGs
                      partition their clean data)
    compute           clean inputs + catalog -> staged kpis.parquet / kpis.csv / privacy.json;
                      through the portal ledger's release protocol (one release spending
                      for every privacy unit at once, caps from the policy); a rerun of the same month returns the recorded table
                      instead of drawing new noise
    dashboard         staged table + earlier KPI partitions -> staged dashboard.html
    commit_partition  staging -> outputs/opencity-kpis/dt=YYYY-MM-01/
    publish           the partition (Parquet, CSV, dashboard) -> the configured catalog, with
                      primary_key (kpi_code, area, period) for a CKAN DataStore
    manifest          inputs, parameters, ledger entries, outputs

Every step returns a small JSON-able dict (paths, counts) for XCom.
"""

from __future__ import annotations

import io
import json
import logging
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from opencity import release
from opencity.errors import DataQualityError
from opencity.io import (
    STATEMENT_FILE,
    PrivacyStatement,
    read_reference_csv,
    write_parquet_atomic,
    write_statement,
    write_text_atomic,
)
from opencity.manifest import input_hashes, write_run_manifest
from opencity.release import Committed, ProductSpec, Staged, Step, as_staged
from opencity.settings import Settings, partition_name
from publish.base import DatasetRelease, Field, Resource
from publish.frictionless import dictionary_fields
from transforms.schemas import DISTRICTS, SCHEMAS, TOWERS

log = logging.getLogger(__name__)

DATASET = "opencity-kpis"
# The canonical sources a KPI of the registry may name (kpi.registry imports no stage).
KPI_SOURCES = frozenset(SCHEMAS)
FIELDS = (
    Field("kpi_code", "string", "KPI code: U4SSC KPI number (ITU-T Y.4903) or OpenCity 'OC:' code"),
    Field("kpi_name", "string", "KPI name"),
    Field("fgssc_dimension", "string", "FG-SSC dimension D1-D6"),
    Field("u4ssc_dimension", "string", "U4SSC dimension (Economy, Environment, Society and "
                                       "culture)"),
    Field("area", "string", "'city' or a district_id of the districts reference table"),
    Field("period", "string", "Month the KPI describes, YYYY-MM"),
    Field("value", "number", "KPI value in 'unit'; empty when suppressed"),
    Field("unit", "string", "Unit of value"),
    Field("method", "string", "public (exact, registry data), dp (differentially private) or "
                              "suppressed"),
    Field("error_bound", "number", "Half-width of a 95 % interval for the DP noise, in 'unit'; "
                                   "0 for public values"),
    Field("withheld_reason", "string", "Why the value is withheld (method suppressed); empty "
                                       "when the value is published"),
    Field("source_datasets", "string", "Comma-separated OpenCity source datasets"),
    Field("computed_at", "datetime", "End of the data interval of the run that computed it"),
    Field("noise_std", "number", "Approximate standard deviation of the DP estimate in 'unit' "
                                 "(error_bound / 1.96 before clipping); 0 for public values"),
    Field("value_unclipped", "number", "The DP estimate before clipping to the KPI's domain"),
)


def _staging(settings: Settings, start: datetime) -> Path:
    return settings.layout.output(DATASET, start).with_name(f".{partition_name(start)}.staging")


def _inputs_dir(settings: Settings, source: str, start: datetime) -> Path:
    return settings.layout.root / "clean" / "kpi_inputs" / source / partition_name(start)


def ingest(settings: Settings, start: datetime, end: datetime, key=None) -> dict[str, Any]:
    """Ingest every raw source present for [start, end) into clean/kpi_inputs/.

    Missing raw sources are skipped (their KPIs then fail with a clear message); rows outside
    the interval are left for other months.
    """
    from opencity.secrets import resolve_hmac_key
    from transforms.ingest import Reference, ingest_file

    raw = Path(settings.raw_dir)
    districts_csv, towers_csv = raw / "city" / "districts.csv", raw / "city" / "towers.csv"
    reference = Reference(
        districts=read_reference_csv(districts_csv, DISTRICTS),
        towers=read_reference_csv(towers_csv, TOWERS) if towers_csv.is_file() else None,
    )
    key = key or resolve_hmac_key()
    out: dict[str, Any] = {"sources": {}, "missing": []}
    hashed = [districts_csv] + ([towers_csv] if towers_csv.is_file() else [])
    from opencity.source_registry import load_sources

    # Every source of the registry (OPENCITY_SOURCES_FILE), with its raw path and profile.
    for src in load_sources().values():
        source, path = src.kind, raw / src.path
        if not path.exists():
            out["missing"].append(source)
            continue
        result = ingest_file(source, path, _inputs_dir(settings, source, start),
                             quarantine_dir=settings.layout.quarantine(f"kpi_{source}", start),
                             key=key, interval=(start, end), reference=reference,
                             profile=src.profile)
        d = result.as_dict()
        out["sources"][source] = {k: d[k] for k in ("clean_path", "rows_in", "rows_out",
                                                    "rows_quarantined", "rows_other_intervals")}
        hashed.append(path)
    out["districts_csv"] = str(districts_csv)
    out["input_hashes"] = input_hashes(hashed)
    return out


SKIPPED_REASON = ("no input rows for the period in any activity source: no KPI computed, "
                  "nothing published, no privacy budget spent")


def _skipped(start: datetime) -> dict[str, Any]:
    log.warning("%s %s: %s", DATASET, partition_name(start), SKIPPED_REASON)
    return {"skipped": True, "reason": SKIPPED_REASON, "partition": partition_name(start)}


def _ledger(settings: Settings):
    """The portal ledger (settings.state_url); caps and per-release budgets from the policy."""
    from privacy.dp import Ledger

    return Ledger(settings.state_url)


# Not registered sources: the portal's catalog and the city's public reference tables
# (raw/city/districts.csv, towers.csv), which every run reads.
BUILTIN_SOURCES = ("catalog", "districts", "towers")


def registered_sources(ingested: dict[str, Any]) -> set[str]:
    """The sources the city registered, as the ingest step hands them on: those read
    (``sources``) and those registered without a file for the month (``missing``), or the
    explicit ``registered`` list when the ingest gives one."""
    if ingested.get("registered") is not None:
        return set(ingested["registered"])
    return set(ingested.get("sources", {})) | set(ingested.get("missing", []))


def unavailable_sources(registry, ingested: dict[str, Any]) -> dict[str, str]:
    """Source -> "not available (source X is not registered)" for every source a KPI of
    ``registry`` reads that the city did not register: those KPIs are published as not
    available (no value, no budget spent) instead of failing the run."""
    from kpi.compute import not_registered

    registered = registered_sources(ingested)
    needed = {s for k in registry.kpis for s in k.source_datasets}
    return {s: not_registered(s) for s in sorted(needed)
            if s not in registered and s not in BUILTIN_SOURCES}


def _products(releases: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The statement's product entries: one per DP statistic of a KPI (``"<code> (<release>)"``,
    the same keys as every DP product), all in ``kpis.parquet``."""
    products: dict[str, dict[str, Any]] = {}
    for rel in releases:
        info = rel.get("info") or {}
        name = f"{rel.get('kpi_code')} ({rel.get('release')})"
        if name in products:
            raise DataQualityError(f"{DATASET}: two KPI releases are named {name!r}; this is "
                                   "a bug in the KPI registry or kpi.compute")
        mechanisms = info.get("mechanisms") or {}
        products[name] = {
            "mechanism": ", ".join(sorted({str(m.get("mechanism"))
                                           for m in mechanisms.values()})) or None,
            "epsilon": rel.get("epsilon"), "delta": rel.get("delta"),
            "statistic": info.get("statistic"), "privacy_unit": rel.get("privacy_unit"),
            "bounds": info.get("bounds") or {},
            "selection_threshold": info.get("selection_threshold"),
            "key_source": info.get("key_source"), "file": "kpis.parquet"}
    return products


def compute(settings: Settings, ingested: dict[str, Any], start: datetime, end: datetime,
            registry_path: str | None = None, random_state: int | None = None) -> dict:
    """Compute the KPI table of the month through the ledger's release protocol.

    One release spends for every privacy unit at once (all or nothing) from the portal-wide
    accounts; the registry's spend per unit may not exceed the policy's per-release budget
    of ``opencity-kpis``. A rerun of the month returns the recorded table (no fresh noise).
    """

    from kpi.compute import (
        KpiInputs,
        KpiRunConfig,
        compute_kpis,
        period_without_data,
        unavailable_kpis,
    )
    from kpi.io import read_catalog_partitions, read_optional_parquet
    from kpi.registry import load_registry
    from privacy.dp import DPBudget

    rows = {s: v.get("rows_out", 0) for s, v in ingested.get("sources", {}).items()}
    if period_without_data(rows):
        return _skipped(start)
    registry = load_registry(registry_path, sources=KPI_SOURCES)
    unavailable = unavailable_sources(registry, ingested)
    skipped_kpis = unavailable_kpis(registry, unavailable)
    if skipped_kpis:
        log.warning("%s %s: %d KPI(s) not available: %s", DATASET, partition_name(start),
                    len(skipped_kpis), "; ".join(f"{c}: {r}" for c, r in skipped_kpis.items()))
    part = partition_name(start)
    release_id = f"kpis-{start:%Y-%m}"
    ledger = _ledger(settings)
    # A KPI that is not computed spends nothing: the budget is that of the others.
    computed = replace(registry, kpis=tuple(k for k in registry.kpis
                                            if k.code not in skipped_kpis))
    costs = {unit: DPBudget(eps) for unit, eps in computed.spend_by_unit().items()}
    staging = _staging(settings, start)

    def run() -> tuple[dict, dict[str, bytes]]:
        sources = ingested["sources"]
        tables = {s: read_optional_parquet(v["clean_path"]) for s, v in sources.items()}
        raw = Path(settings.raw_dir)
        towers_csv = raw / "city" / "towers.csv"
        inputs = KpiInputs(
            districts=read_reference_csv(ingested["districts_csv"], DISTRICTS),
            towers=read_reference_csv(towers_csv, TOWERS) if towers_csv.is_file() else None,
            catalog=read_catalog_partitions(settings.layout.catalog),
            **tables,
        )
        cfg = KpiRunConfig(start, end, end, seed=settings.seed, random_state=random_state,
                           exclude_datasets=(DATASET,))
        table, releases = compute_kpis(inputs, registry, cfg, unavailable=unavailable)
        buf = io.BytesIO()
        pq.write_table(table, buf)
        return ({"releases": json.loads(json.dumps(releases, default=str))},
                {"kpis.parquet": buf.getvalue()})

    outcome = ledger.release(DATASET, part, start.date(), costs, run, release_id=release_id)
    if outcome.reused:
        # A rerun: publish the recorded release again; fresh noise would leak more.
        log.info("KPI release %s was already recorded (ledger id %s); reusing it",
                 release_id, outcome.record.id)
    table = pq.read_table(io.BytesIO(outcome.artifacts["kpis.parquet"]))
    releases = outcome.record.release.get("releases", [])
    rec = outcome.record
    entries = [{"ledger_id": rec.id, "dataset": rec.dataset, "partition": rec.partition,
                "release_id": rec.release_id, "policy_hash": rec.policy_hash,
                "privacy_unit": sp.unit, "period": sp.period, "epsilon": sp.epsilon,
                "delta": sp.delta} for sp in rec.spends]
    reused = rec if outcome.reused else None
    spend = {sp.unit: sp.epsilon for sp in rec.spends}
    write_parquet_atomic(table, staging / "kpis.parquet")
    statement = PrivacyStatement(
        dataset=DATASET, partition=part, method="differential_privacy",
        spent={sp.unit: {"epsilon": sp.epsilon, "delta": sp.delta} for sp in rec.spends},
        products=_products(releases), policy_hash=rec.policy_hash,
        release_id=rec.release_id,
        details={
            "period": f"{start:%Y-%m}", "ledger": entries,
            "budget_per_unit": {u: {"epsilon": e, "delta": 0.0, "period": "month"}
                                for u, e in spend.items()},
            "portal_budget_per_unit": {
                u: {"cap_epsilon": ledger.policy.unit(u).epsilon,
                    "cap_delta": ledger.policy.unit(u).delta,
                    "period": ledger.policy.unit(u).period,
                    "per": f"{u} per calendar {ledger.policy.unit(u).period}, every "
                           "dataset of the portal together"} for u in spend},
            "releases": [dict(r) for r in releases]})
    write_statement(statement, staging / STATEMENT_FILE)
    methods = table.column("method").to_pylist()
    return {"staging_dir": str(staging), "rows": table.num_rows,
            "not_available": skipped_kpis,
            "kpi_codes": len(set(table.column("kpi_code").to_pylist())),
            "dimensions": sorted(set(table.column("fgssc_dimension").to_pylist())),
            "methods": {m: methods.count(m) for m in sorted(set(methods))},
            "reused_release": reused is not None, "ledger": entries,
            "min_units": registry.min_units}


def dashboard(settings: Settings, staged: dict, start: datetime,
              registry_path: str | None = None) -> dict:
    """Render the period's dashboard next to the staged table (trend from earlier months)."""
    from kpi.dashboard import render_dashboard
    from kpi.io import read_kpi_history
    from kpi.registry import load_registry
    from opencity.pipelines.partitions import committed

    if staged.get("skipped"):
        return _skipped(start)
    staging = Path(staged["staging_dir"])
    final = settings.layout.output(DATASET, start)
    if committed(staging, final, "kpis.parquet"):  # rerun alone after the commit
        staging = final
    table = pq.read_table(staging / "kpis.parquet")
    history = read_kpi_history(settings.layout.root / "outputs" / DATASET,
                               before_partition=partition_name(start))
    html = render_dashboard(table, history, load_registry(registry_path, sources=KPI_SOURCES),
                            settings.city_name)
    path = write_text_atomic(html, staging / "dashboard.html", restricted=True)
    return {"dashboard": str(path), "bytes": len(html.encode()),
            "history_periods": len(set(history.column("period").to_pylist()))}


# Person-level sources: a KPI built from them is never 'public' (privacy.guard.kpi_rows).
PERSON_SOURCES = ("meter_readings", "transit_taps", "waste_pickups", "service_requests", "cdr")


def _guard(settings: Settings, staged: Staged, folder: Path, start: datetime) -> dict:
    """Composition guard on the KPI table (reports/opencity-kpis/dt=.../guard.json)."""
    from privacy import guard as g

    table = pq.read_table(folder / "kpis.parquet")
    report = g.guard(DATASET, partition_name(start),
                     [g.kpi_rows(table, person_sources=PERSON_SOURCES)], [DATASET])
    path = report.write(settings.layout.reports(DATASET, start) / "guard.json")
    report.raise_if_failed(path)
    return {"passed": True, "report": str(path)}


def _validate(settings: Settings, staged: Staged, staging: Path, start: datetime) -> dict:
    """Release gate on the KPI table: its privacy statement must exist, and the generic
    product suite (no identifier columns or identifier-looking values) must pass."""
    from expectations.gate import validate_or_raise

    if not (staging / "privacy.json").exists():
        raise DataQualityError(f"{DATASET} {partition_name(start)}: the privacy statement "
                               "privacy.json is missing; nothing is published without it")
    summary = validate_or_raise(DATASET, staging / "kpis.parquet",
                                context={"privacy": {"kind": "none",
                                                     "allowed_columns": ["kpi_name"]}},
                                reports_dir=settings.layout.reports(DATASET, start))
    return {"success": summary.get("success")}


def release_for(settings: Settings, committed: Committed, start: datetime, end: datetime,
                provenance: dict) -> DatasetRelease:
    out = Path(committed.output_dir)
    budget = {u["privacy_unit"]: u["epsilon"] for u in committed["ledger"]}
    privacy = {"privacy_method": "differential_privacy", "dp_mechanisms":
               "Geometric (counts), Snapping (sums)", "delta": 0.0,
               "epsilon_per_unit_per_month": budget,
               "suppression_min_units": committed["min_units"]}
    part = partition_name(start)
    month = f"{start:%Y-%m}"
    return DatasetRelease(
        name=DATASET,
        title=f"Smart sustainable city KPIs (ITU U4SSC), monthly - {settings.city_name}",
        description=(
            "Monthly key performance indicators of the ITU-T FG-SSC / U4SSC framework for the "
            "city and each district, computed by the OpenCity pipeline, with a static "
            "monitoring dashboard. KPIs derived from individual households, fare cards, 311 "
            "requesters or mobile subscribers are differentially private (method 'dp', with a "
            "95 % error bound); registry-level KPIs are exact ('public'); values with too few "
            "people behind them or too much noise are withheld ('suppressed')."
        ),
        resources=(
            Resource(out / "kpis.parquet", "kpis", "parquet", f"KPIs {month} (Parquet)", part),
            Resource(settings.layout.csv(DATASET, start) / "kpis.csv", "kpis-csv", "csv",
                     f"KPIs {month} (CSV copy)", part),
            Resource(out / "dashboard.html", "dashboard", "html",
                     f"Monitoring dashboard {month} (static HTML, works offline)", part),
        ),
        fields=dictionary_fields(DATASET, FIELDS, "differential_privacy"),
        privacy=privacy,
        tags=("kpi", "smart-city", "itu", "u4ssc", "open-data", "differential-privacy"),
        temporal_coverage=(f"{start:%Y-%m-%d}", f"{end:%Y-%m-%d}"),
        spatial_coverage=settings.city_name,
        accrual_periodicity="R/P1M",
        provenance=provenance,
        primary_key=("kpi_code", "area", "period"),
    )


def release_params(settings: Settings, committed: Committed) -> dict[str, Any]:
    """The month's spend per unit, which the release registry checks against the policy."""
    return {"spend": {u["privacy_unit"]: {"epsilon": u["epsilon"], "delta": u["delta"]}
                      for u in committed["ledger"]}}


def _stage_compute(settings: Settings, ingested: dict[str, Any], _prev: Staged | None,
                   start: datetime, end: datetime) -> Staged:
    return as_staged(DATASET, start, compute(settings, ingested, start, end))


def _stage_dashboard(settings: Settings, _ingested: dict[str, Any], staged: Staged,
                     start: datetime, end: datetime) -> Staged:
    if staged.skipped:
        return staged
    rendered = dashboard(settings, staged.to_xcom(), start)
    return replace(staged, details={**staged.details, "rendered": rendered})


KPIS = ProductSpec(
    dataset=DATASET,
    files=("kpis.parquet", "dashboard.html"),
    table="kpis.parquet",
    csv="kpis.csv",
    stages=(Step("compute", _stage_compute), Step("dashboard", _stage_dashboard)),
    guard=_guard,
    gate=_validate,
    release=release_for,
    params=release_params,
    commit_task="commit_partition",
    publish_task="publish",
    outlet="kpis",
)


def commit_partition(settings: Settings, staged: dict, start: datetime) -> dict:
    """Guard + gate, then the staged month into outputs/opencity-kpis/dt=.../ (+ CSV copy):
    the release runner (:func:`opencity.release.commit`) on :data:`KPIS`."""
    return release.commit(KPIS, settings, as_staged(DATASET, start, staged), start).to_xcom()


def publish(settings: Settings, committed: dict, staged: dict, start: datetime, end: datetime,
            run_id: str, ingested: dict) -> dict:
    """Registry check and record, then the catalog (:func:`opencity.release.publish`)."""
    return release.publish(KPIS, settings, Committed.from_xcom(committed), start, end, run_id,
                           ingested).to_xcom()


def ingest_interval(settings: Settings, start: datetime, end: datetime) -> dict[str, Any]:
    """The DAG's ingest: every registered source of the month (fails when none has rows)."""
    from opencity.pipelines.partitions import require_any_input

    return require_any_input(ingest(settings, start, end), start, end)


def manifest_outcomes(settings: Settings, dag_id: str, run_id: str, start: datetime,
                      end: datetime, ingested: dict, outcomes) -> str:
    """The DAG's manifest from the runner's outcomes (:func:`manifest`)."""
    o = outcomes[DATASET]
    return manifest(settings, dag_id, run_id, start, end, ingested, o.staged.to_xcom(),
                    o.committed.to_xcom(), o.published.to_xcom())


def manifest(settings: Settings, dag_id: str, run_id: str, start: datetime, end: datetime,
             ingested: dict, staged: dict, committed: dict, published: dict) -> str:
    path = settings.layout.manifest(dag_id, start)
    envelope = {"dag_id": dag_id, "run_id": run_id, "start": start, "end": end,
                "inputs": ingested.get("input_hashes", {}), "published": published,
                "row_counts": {s: {k: v for k, v in d.items() if k != "clean_path"}
                               for s, d in ingested.get("sources", {}).items()}}
    if staged.get("skipped"):
        write_run_manifest(path, **envelope, release=False, status="skipped",
                           reason=SKIPPED_REASON)
        log.info("manifest written (skipped period): %s", path)
        return str(path)
    write_run_manifest(
        path, **envelope,
        parameters={"publish_target": settings.publish_target, "seed": settings.seed},
        missing_sources=ingested.get("missing", []),
        kpis={**{k: staged[k] for k in ("rows", "kpi_codes", "dimensions", "methods",
                                        "reused_release")},
              "not_available": staged.get("not_available", {})},
        ledger=staged["ledger"],
        outputs={k: committed.get(k) for k in ("output_dir", "files", "rows", "validation",
                                                "guard")},
    )
    log.info("manifest written: %s", path)
    return str(path)
