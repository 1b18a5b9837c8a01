"""Read what a run directory knows about each release into plain, JSON-ready dicts.

Sources, per dataset and partition (see opencity.settings.RunLayout):

* ``catalog/<dataset>/package.json``: title, privacy block, provenance, published resources;
* ``outputs/<dataset>/<partition>/``: the products (error bounds are read from their
  ``error_bound_95`` / ``error_bound`` columns), ``privacy.json`` of DP releases;
* ``reports/<dataset>/<partition>/``: ``kanon-report.json``, ``guard.json`` (composition
  guard), ``*.summary.json`` of the Great Expectations gate and its ``data_docs/``;
* ``manifests/<dag_id>/<partition>.json``: input hashes and row counts;
* ``ledger/privacy_budget.sqlite``: every epsilon/delta spent, per privacy unit and period;
* ``registry/review.sqlite``: approval requests, decisions and withdrawals;
* ``raw/city/districts.csv``: the district populations (the population table of the
  journalist and marketer risk).

Nothing here returns row content: only counts, parameters, hashes and statistics of the
published (already anonymized) products.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import statistics
from collections import defaultdict
from datetime import date
from pathlib import Path
from typing import Any

from opencity.errors import DataQualityError, PipelineError
from opencity.io import STATEMENT_FILE, PrivacyStatement, read_statement
from opencity.settings import RunLayout

log = logging.getLogger(__name__)

# Keys of a catalog privacy block that describe one release, not the policy.
_RELEASE_KEYS = {"suppressed_records", "generalization", "ledger_id", "ledger", "partitions",
                 "portal_budget", "policy_hash"}


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        log.warning("review: cannot read %s (%s); left out of the report", path, err)
        return None


def statement(outputs_dir: Path) -> PrivacyStatement | None:
    """The release's privacy statement (``privacy.json``), None when there is none; one that
    is not a statement is left out of the report with a warning (never guessed)."""
    try:
        return read_statement(Path(outputs_dir) / STATEMENT_FILE)
    except DataQualityError as err:
        log.warning("review: %s; left out of the report", err)
        return None


def partition_date(partition: str) -> date | None:
    try:
        return date.fromisoformat(partition.removeprefix("dt="))
    except ValueError:
        return None


# ------------------------------------------------------------------ catalog and outputs
def catalog_packages(layout: RunLayout) -> dict[str, dict]:
    """dataset name -> package.json of the local catalog."""
    out = {}
    for p in sorted(layout.catalog.glob("*/package.json")):
        pkg = _json(p)
        if pkg:
            out[pkg.get("name", p.parent.name)] = pkg
    return out


def published_partitions(pkg: dict) -> list[str]:
    return sorted({r["partition"] for r in pkg.get("resources", []) if r.get("partition")})


def staged_partitions(layout: RunLayout, dataset: str) -> list[str]:
    base = layout.root / "outputs" / dataset
    return sorted(p.name for p in base.glob("dt=*") if p.is_dir()) if base.is_dir() else []


def datasets(layout: RunLayout) -> list[str]:
    names = set(catalog_packages(layout))
    outputs = layout.root / "outputs"
    if outputs.is_dir():
        names |= {p.name for p in outputs.iterdir() if p.is_dir()}
    return sorted(names)


def privacy_method(pkg: dict | None, outputs_dir: Path, reports_dir: Path) -> str:
    if pkg:
        method = pkg.get("opencity", {}).get("privacy", {}).get("privacy_method")
        if method:
            return str(method)
    if (reports_dir / "kanon-report.json").exists():
        return "k_anonymity"
    found = statement(outputs_dir)
    if found is not None:
        return found.method
    return "unknown"


# ------------------------------------------------------------------ microdata risk
def population_table(raw_dir: Path) -> dict[str, int] | None:
    """District id -> residents, from the city's reference table <raw_dir>/city/districts.csv."""
    import pyarrow.csv as pcsv

    path = Path(raw_dir) / "city" / "districts.csv"
    if not path.exists():
        return None
    t = pcsv.read_csv(path, convert_options=pcsv.ConvertOptions(
        column_types={"district_id": "string"}))
    if "population" not in t.column_names:
        return None
    return {d: int(n) for d, n in zip(t["district_id"].to_pylist(), t["population"].to_pylist(),
                                      strict=True) if n is not None}


def microdata_risk(parquet: Path, quasi_identifiers: list[str], population: dict[str, int] | None,
                   district_column: str = "district_id", threshold: float = 0.2
                   ) -> dict[str, Any] | None:
    """Prosecutor, journalist and marketer risk of a released k-anonymous table.

    Prosecutor risk is sample based (1 / class size). Journalist and marketer risk use the
    population table: a class j of f_j released records in district d (or in the whole city
    when the district is generalized to '*') stands for an estimated F_j = max(f_j,
    f_j * N_d / n_d) residents, N_d the district's population and n_d the released records of
    that district (the sampling fraction n_d / N_d expands the class to the population). Then
    journalist max = max_j 1/F_j, journalist average = mean over records of 1/F_j and marketer
    risk = (1/n) * sum_j f_j / F_j (expected share of records an attacker matching the whole
    population re-identifies).
    """
    import pyarrow.parquet as pq

    if not parquet.exists():
        return None
    t = pq.read_table(parquet, columns=list(quasi_identifiers))
    n = t.num_rows
    if n == 0:
        return {"records": 0, "classes": 0}
    grouped = t.group_by(list(quasi_identifiers)).aggregate([([], "count_all")])
    sizes = grouped["count_all"].to_pylist()
    out: dict[str, Any] = {
        "records": n, "classes": len(sizes), "threshold": threshold,
        "prosecutor": {"max": 1.0 / min(sizes), "average": len(sizes) / n,
                       "records_above_threshold": sum(s for s in sizes if 1.0 / s > threshold)
                       / n},
        "sample_uniques": sum(s for s in sizes if s == 1) / n,
    }
    if not population or district_column not in quasi_identifiers:
        out["population_model"] = "no population table: journalist risk equals prosecutor risk"
        out["journalist"] = dict(out["prosecutor"])
        out["marketer"] = {"average": len(sizes) / n}
        return out
    city = sum(population.values())
    districts = grouped[district_column].to_pylist()
    per_district: dict[str, int] = defaultdict(int)
    for d, s in zip(districts, sizes, strict=True):
        per_district[d] += s
    est = []
    for d, s in zip(districts, sizes, strict=True):
        pop = population.get(d, city)  # '*' (or an unknown value): the whole city
        n_d = per_district[d] if d in population else n
        est.append(max(float(s), s * pop / max(n_d, 1)))
    inv = [1.0 / f for f in est]
    out["journalist"] = {
        "max": max(inv),
        "average": math.fsum(s * r for s, r in zip(sizes, inv, strict=True)) / n,
        "records_above_threshold": sum(s for s, r in zip(sizes, inv, strict=True)
                                       if r > threshold) / n,
    }
    out["marketer"] = {"average": math.fsum(s / f for s, f in zip(sizes, est, strict=True)) / n}
    out["population_model"] = (
        "district populations from the reference table raw/city/districts.csv "
        f"({len(population)} districts, {city:,} residents); a class stands for "
        "F = f * N_district / n_district residents")
    out["population_total"] = city
    return out


# ------------------------------------------------------------------ DP products
def _error_bounds(parquet: Path) -> dict[str, Any] | None:
    import pyarrow.parquet as pq

    if not parquet.exists():
        return None
    schema = pq.read_schema(parquet)
    col = next((c for c in ("error_bound_95", "error_bound", "requests_error_bound_95")
                if c in schema.names), None)
    if col is None:
        return None
    values = [float(v) for v in pq.read_table(parquet, columns=[col])[col].to_pylist()
              if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not values:
        return {"column": col, "cells": 0, "median": None, "worst": None}
    return {"column": col, "cells": len(values), "median": statistics.median(values),
            "worst": max(values)}


def dp_products(statement: PrivacyStatement, outputs_dir: Path) -> list[dict[str, Any]]:
    """One entry per DP product of the statement: mechanism, epsilon, delta, privacy unit,
    bounds, threshold, key source and the error bounds of its file."""
    only_unit = statement.units[0] if len(statement.units) == 1 else None
    bounds: dict[str, Any] = {}
    out = []
    for name, meta in sorted(statement.products.items()):
        file = str(meta.get("file") or f"{name}.parquet")
        if file not in bounds:
            bounds[file] = _error_bounds(outputs_dir / file)
        out.append({
            "name": name,
            "mechanism": meta.get("mechanism"),
            "epsilon": meta.get("epsilon"),
            "delta": meta.get("delta"),
            "statistic": meta.get("statistic"),
            "privacy_unit": meta.get("privacy_unit") or only_unit,
            "contribution_bounds": meta.get("bounds") or {},
            "selection_threshold": meta.get("selection_threshold"),
            "key_source": meta.get("key_source"),
            "error_bound": bounds[file],
        })
    return out


# ------------------------------------------------------------------ ledger
def ledger_spends(url: str | None = None) -> list[dict[str, Any]]:
    """Every spend of the portal's ledger: one row per (release, privacy unit), oldest first.

    ``period`` is the unit's account period (a calendar month under the default policy).
    """
    from opencity.review.approvals import state_url
    from privacy.dp.ledger import Ledger

    try:
        ledger = Ledger(state_url(url))
        releases = ledger.releases()
    except PipelineError as err:  # an unreadable ledger must not stop the report
        log.warning("review: cannot read the ledger (%s); budget left out", err)
        return []
    return [{"dataset": r.dataset, "partition": r.partition, "release_id": r.release_id,
             "policy_hash": r.policy_hash, "recorded_at": r.created_at,
             "privacy_unit": s.unit, "period": s.period, "epsilon": float(s.epsilon),
             "delta": float(s.delta)} for r in releases for s in r.spends]


def non_dp_releases(url: str | None = None) -> list[dict[str, Any]]:
    """Every published release that spends no privacy-loss budget (k-anonymous microdata,
    small-count suppression): one row per (release, privacy unit), so a person's view lists
    them beside the DP spends. ``k_counts`` says whether k counts persons or records;
    ``epsilon`` is None (not differentially private)."""
    from opencity.registry import Registry
    from opencity.review.approvals import state_url
    from privacy.policy import load_policy

    try:
        policy = load_policy()
        records = Registry(state_url(url), policy).partitions()
    except PipelineError as err:  # an unreadable registry must not stop the report
        log.warning("review: cannot read the release registry (%s); non-DP releases left out",
                    err)
        return []
    out = []
    for r in records:
        try:
            ds = policy.dataset(r.dataset)
        except PipelineError:
            continue
        if ds.method == "differential_privacy":
            continue
        when = partition_date(r.partition)
        for unit in ds.units:
            out.append({
                "privacy_unit": unit,
                "period": policy.unit(unit).period_key(when) if when else None,
                "dataset": r.dataset, "partition": r.partition, "method": ds.method,
                "epsilon": None, "k": r.params.get("k"), "l": r.params.get("l"),
                "k_counts": r.params.get("k_counts", "records" if ds.method == "k_anonymity"
                                         else None),
                "max_records_per_person": r.params.get("max_records_per_person"),
                "threshold": r.params.get("threshold")})
    return out


def month_of(spend: dict[str, Any]) -> str:
    """Calendar month (YYYY-MM) of a partition or spend."""
    d = partition_date(spend.get("partition") or "")
    if d:
        return f"{d:%Y-%m}"
    return str(spend.get("period", ""))[:7]


def unit_totals(spends: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """(privacy unit, account period) -> total epsilon/delta across every dataset, with the
    spends per partition and dataset (for the chart)."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for s in spends:
        key = (s["privacy_unit"], s["period"])
        cur = out.setdefault(key, {"privacy_unit": key[0], "month": key[1], "epsilon": 0.0,
                                   "delta": 0.0, "datasets": {}, "by_partition": {}})
        cur["epsilon"] = math.fsum([cur["epsilon"], s["epsilon"]])
        cur["delta"] = math.fsum([cur["delta"], s["delta"]])
        cur["datasets"][s["dataset"]] = math.fsum(
            [cur["datasets"].get(s["dataset"], 0.0), s["epsilon"]])
        bucket = cur["by_partition"].setdefault(s["partition"], {})
        bucket[s["dataset"]] = math.fsum([bucket.get(s["dataset"], 0.0), s["epsilon"]])
    return out


def unit_caps(policy_path: str | None = None) -> dict[str, dict[str, Any]]:
    """Privacy unit -> {"epsilon", "delta", "period"}: the per-person cap of the policy."""
    from privacy.policy import load_policy

    try:
        policy = load_policy(policy_path)
    except PipelineError as err:
        log.warning("review: cannot load the release policy (%s); caps left out", err)
        return {}
    return {u: {"epsilon": b.epsilon, "delta": b.delta, "period": b.period}
            for u, b in policy.units.items()}


# ------------------------------------------------------------------ quality, manifests
def data_quality(reports_dir: Path) -> list[dict[str, Any]]:
    out = []
    for p in sorted(reports_dir.glob("*.summary.json")):
        s = _json(p) or {}
        docs = s.get("data_docs")
        docs_path = Path(docs) if docs else None
        if docs_path is not None and not docs_path.is_absolute():
            docs_path = reports_dir / docs_path
        out.append({
            "suite": s.get("suite") or p.name.removesuffix(".summary.json"),
            "success": bool(s.get("success")),
            "evaluated": int(s.get("evaluated") or 0),
            "failures": [
                {"expectation": f.get("expectation") or f.get("type"),
                 "column": f.get("column")} for f in (s.get("failures") or [])
                if isinstance(f, dict)],
            "rows": s.get("rows"),
            "rows_quarantined": s.get("rows_quarantined") or 0,
            "data_docs": str(docs_path) if docs_path and docs_path.exists() else None,
        })
    return out


def manifest_for(layout: RunLayout, dataset: str, partition: str) -> dict | None:
    """The manifest of the run that produced ``dataset``/``partition`` (by its outputs)."""
    for p in sorted((layout.root / "manifests").glob(f"*/{partition}.json")):
        m = _json(p) or {}
        text = json.dumps(m.get("outputs", {})) + json.dumps(m.get("microdata", {}))
        if f"/{dataset}/" in text or m.get("dataset") == dataset:
            return m
    return None


def reconciliation(manifest: dict | None, outputs_dir: Path) -> dict[str, Any] | None:
    """Rows in = rows clean + quarantined + of other intervals, from the manifest."""
    if manifest and manifest.get("row_counts"):
        rc = manifest["row_counts"]
        parts = [rc.get(k) for k in ("rows_clean", "rows_quarantined", "rows_other_intervals")]
        ok = None
        if rc.get("rows_in") is not None and all(v is not None for v in parts):
            ok = rc["rows_in"] == sum(parts)
        return {**{k: v for k, v in rc.items() if isinstance(v, int)}, "reconciles": ok,
                "source": "manifest"}
    run = _json(outputs_dir / "_run" / "report.json") if (
        outputs_dir / "_run" / "report.json").exists() else None
    if run:
        aside = sum(int(v) for v in (run.get("rows_set_aside") or {}).values())
        return {"rows_in": run.get("rows_read"), "rows_used": run.get("rows_used"),
                "rows_set_aside": aside,
                "reconciles": run.get("rows_read") == (run.get("rows_used") or 0) + aside,
                "source": "release run report"}
    return None


def policy_of_release(store: Any, dataset: str, partition: str,
                      privacy: dict | None) -> dict[str, Any]:
    """The policy version recorded for this release (request or decision), else derived.

    A derived version is the hash of the release's privacy parameters without the per-release
    statistics; it is marked ``"source": "derived from the release parameters"``.
    """
    for r in reversed(store.requests()):
        if r.dataset == dataset and r.partition == partition:
            return {"hash": r.policy_hash, "source": "approval request"}
    for d in reversed(store.decisions(dataset)):
        if d.partition == partition:
            return {"hash": d.policy_hash, "source": "approval decision"}
    params = {k: v for k, v in (privacy or {}).items() if k not in _RELEASE_KEYS}
    digest = hashlib.sha256(json.dumps({"dataset": dataset, "parameters": params},
                                       sort_keys=True, default=str).encode()).hexdigest()
    return {"hash": digest, "source": "derived from the release parameters"}
