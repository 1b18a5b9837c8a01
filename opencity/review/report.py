"""The release report (one per dataset partition) and the portal report (one per run dir).

``build_release_report`` and ``build_portal_report`` return JSON-ready dicts that validate
against ``schemas/release-report.schema.json`` and ``schemas/portal-report.schema.json``;
``write_reports`` writes both kinds, as JSON and as offline HTML (opencity.review.render):

    OUT/index.html, OUT/portal.json                         the portal report
    OUT/releases/<dataset>/<partition>.html|.json           one release report per partition

Statuses of a release: ``published`` (its resources are in the catalog), ``pending approval``
(staged, waiting for a privacy officer), ``rejected`` (a privacy officer said no; nothing was
published), ``withdrawn`` (taken back off the portal; the record and the spent budget stay) and
``staged`` (in outputs/, not published, no request).
"""

from __future__ import annotations

import json
import logging
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from opencity.io import PrivacyStatement
from opencity.review import collect
from opencity.review.approvals import OPEN, REJECTED, ReviewStore
from opencity.settings import RunLayout

log = logging.getLogger(__name__)

SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"
RELEASE_SCHEMA = SCHEMA_DIR / "release-report.schema.json"
PORTAL_SCHEMA = SCHEMA_DIR / "portal-report.schema.json"
RELEASE_SCHEMA_ID = "opencity.release-report/1"
PORTAL_SCHEMA_ID = "opencity.portal-report/1"

PUBLISHED, PENDING, WITHDRAWN, STAGED = "published", "pending approval", "withdrawn", "staged"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dict -> {"a.b": value} for diffs."""
    if not isinstance(d, dict):
        return {prefix.rstrip("."): d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def release_parameters(method: str, kanon: dict | None, privacy: PrivacyStatement | None,
                       manifest: dict | None, package_privacy: dict) -> dict[str, Any]:
    """The privacy parameters one release was made with, from its own per-partition files."""
    if method == "k_anonymity" and kanon and kanon.get("achievable", True):
        models = kanon.get("privacy_models") or {}
        return {"k": kanon.get("k"),
                "l": (models.get("l_diversity") or {}).get("l"),
                "t": (models.get("t_closeness") or {}).get("t"),
                "suppression_limit": kanon.get("suppression_limit"),
                "quasi_identifiers": kanon.get("quasi_identifiers"),
                "generalization": kanon.get("generalization")}
    if method == "differential_privacy" and privacy is not None:
        products = {p: {"epsilon": m.get("epsilon"), "delta": m.get("delta"),
                        "mechanism": m.get("mechanism")}
                    for p, m in privacy.products.items()}
        return {"budget": _budget(privacy), "spent": privacy.to_dict().get("spent"),
                "spent_per_unit": dict(privacy.spent), "products": products or None}
    if manifest and manifest.get("parameters"):
        return {k: v for k, v in manifest["parameters"].items() if k != "publish_target"}
    return {k: v for k, v in package_privacy.items() if k not in collect._RELEASE_KEYS}


def _budget(statement: PrivacyStatement) -> Any:
    """The budget the producer states next to its spend (the per-release budget of the
    policy, or the spend per unit and period), as it wrote it."""
    return statement.details.get("budget") or statement.details.get("budget_per_unit")


def _current_policy(dataset: str) -> dict[str, Any] | None:
    """The current policy entry of ``dataset`` (hash, parameters, description), or None."""
    from opencity.errors import PipelineError
    from opencity.review.policy import policy_version

    try:
        return policy_version(dataset)
    except PipelineError:
        return None


def _registered(store: ReviewStore, dataset: str, partition: str):
    """The release registry's record of this partition (same state DB), or None."""
    from opencity.errors import PipelineError
    from opencity.registry import Registry

    try:
        return Registry(store.db).get(dataset, partition)
    except PipelineError as err:
        log.warning("review: cannot read the release registry (%s)", err)
        return None


def _status(store: ReviewStore, dataset: str, partition: str, published: bool) -> str:
    if store.is_withdrawn(dataset, partition):
        return WITHDRAWN
    if published:
        return PUBLISHED
    reqs = [r for r in store.requests() if r.dataset == dataset and r.partition == partition]
    if reqs and reqs[-1].status == OPEN:
        return PENDING
    if reqs and reqs[-1].status == REJECTED:
        return REJECTED
    return STAGED


def build_release_report(run_dir: str | Path, dataset: str, partition: str, *,
                         store: ReviewStore | None = None,
                         packages: dict[str, dict] | None = None,
                         spends: list[dict] | None = None,
                         state_url: str | None = None,
                         raw_dir: str | Path | None = None) -> dict[str, Any]:
    """Everything a privacy officer needs about one release (see the module docstring).

    ``state_url``: the portal's state database (ledger, approvals); default
    $OPENCITY_STATE_URL. ``raw_dir``: where the city's reference tables are (the district
    populations of the journalist/marketer risk); default $OPENCITY_RAW_DIR, else
    RUN_DIR/raw.
    """
    layout = RunLayout(Path(run_dir))
    raw = Path(raw_dir or os.environ.get("OPENCITY_RAW_DIR") or layout.raw)
    store = store or ReviewStore(state_url)
    packages = collect.catalog_packages(layout) if packages is None else packages
    spends = collect.ledger_spends(state_url) if spends is None else spends
    pkg = packages.get(dataset)
    outputs = layout.root / "outputs" / dataset / partition
    if not outputs.is_dir():  # staged, waiting for the gate (e.g. microdata before publish)
        staging = outputs.with_name(f".{partition}.staging")
        outputs = staging if staging.is_dir() else outputs
    reports = layout.root / "reports" / dataset / partition
    pkg_privacy = (pkg or {}).get("opencity", {}).get("privacy", {})
    current = _current_policy(dataset)
    method = collect.privacy_method(pkg, outputs, reports)
    if method == "unknown" and current:
        method = current["parameters"].get("method", "unknown")
    published = pkg is not None and partition in collect.published_partitions(pkg)
    kanon = collect._json(reports / "kanon-report.json") if (
        reports / "kanon-report.json").exists() else None
    privacy = collect.statement(outputs)
    manifest = collect.manifest_for(layout, dataset, partition)

    registered = _registered(store, dataset, partition)
    passes = [p for p in store.passes(dataset) if p["partition"] == partition]
    requested = [r for r in store.requests() if r.dataset == dataset
                 and r.partition == partition]
    if registered is not None:
        policy = {"hash": registered.policy_hash, "source": "release registry"}
    elif passes:
        policy = {"hash": passes[-1]["policy_hash"], "source": "approval gate"}
    else:
        policy = collect.policy_of_release(store, dataset, partition, pkg_privacy)
    # Approved = the officer's verified approval (signed, or the officer's Airflow user), not
    # merely a row saying "approved" in the decision history.
    policy["approved"] = store.is_approved(dataset, policy["hash"])
    policy["decisions"] = [d.as_dict() for d in store.decisions(dataset)
                           if d.policy_hash == policy["hash"]]

    if registered is not None and registered.params:
        params = dict(registered.params)
    elif passes and passes[-1]["parameters"]:
        params = passes[-1]["parameters"]
    elif requested and requested[-1].parameters:  # not published: what it was requested under
        params = dict(requested[-1].parameters)
    elif not published and current:  # not published: the policy it would be published under
        params = dict(current["parameters"])
    else:
        params = release_parameters(method, kanon, privacy, manifest, pkg_privacy)
    report: dict[str, Any] = {
        "schema": RELEASE_SCHEMA_ID,
        "generated_at": _now(),
        "dataset": dataset,
        "title": (pkg or {}).get("title") or (current or {}).get("description") or dataset,
        "partition": partition,
        "privacy_method": method,
        "status": _status(store, dataset, partition, published),
        "policy": policy,
        "parameters": params,
        "changes": None,
        "microdata": None,
        "dp": None,
        "suppression": None,
        "guard": collect._json(reports / "guard.json") if (reports / "guard.json").exists()
        else None,
        "data_quality": collect.data_quality(reports),
        "inputs": {
            "hashes": dict(sorted(((manifest or {}).get("inputs") or
                                   (pkg or {}).get("opencity", {}).get("provenance", {})
                                   .get("input_hashes") or {}).items())),
            "reconciliation": collect.reconciliation(manifest, outputs),
        },
        "resources": [
            {"name": r["name"], "format": r["format"], "hash": r.get("hash"),
             "size": r.get("size")}
            for r in (pkg or {}).get("resources", []) if r.get("partition") == partition],
        "withdrawal": next((w.as_dict() for w in store.withdrawals(dataset)
                            if w.partition == partition), None),
        # What the ledger holds for this release: it stays spent whatever happens next
        # (rejected or withdrawn releases included).
        "budget_spent": [{k: s[k] for k in ("privacy_unit", "period", "epsilon", "delta")}
                         for s in spends if s["dataset"] == dataset
                         and s["partition"] == partition],
    }
    if method == "k_anonymity":
        report["microdata"] = _microdata_section(raw, outputs, kanon)
    elif method == "differential_privacy" and privacy is not None:
        report["dp"] = _dp_section(privacy, outputs, dataset, partition, spends, collect.unit_caps())
    elif method == "small_count_suppression":
        report["suppression"] = _suppression_section(outputs, pkg_privacy, manifest, params)
    report["changes"] = _changes(layout, store, packages, dataset, partition, report)
    return report


def _microdata_section(raw_dir: Path, outputs: Path, kanon: dict | None) -> dict[str, Any]:
    if not kanon:
        return {"achievable": False, "reason": "no k-anonymity report for this partition"}
    if kanon.get("achievable") is False:
        return {"achievable": False, "reason": kanon.get("reason", "not achievable")}
    models = kanon.get("privacy_models") or {}
    qis = list(kanon.get("quasi_identifiers") or [])
    parquet = next(iter(sorted(outputs.glob("*.parquet"))), outputs / "part-0.parquet")
    risk = collect.microdata_risk(parquet, qis, collect.population_table(raw_dir),
                                  threshold=(kanon.get("risk") or {}).get("threshold", 0.2))
    return {
        "achievable": True,
        "k": kanon.get("k"),
        "l": (models.get("l_diversity") or {}).get("l"),
        "l_variant": (models.get("l_diversity") or {}).get("variant"),
        "t": (models.get("t_closeness") or {}).get("t"),
        "sensitive": (models.get("l_diversity") or models.get("t_closeness") or {})
        .get("sensitive"),
        "quasi_identifiers": qis,
        "generalization": kanon.get("generalization") or {},
        "hierarchy_heights": kanon.get("hierarchy_heights") or {},
        "rows_in": kanon.get("rows_in"),
        "rows_out": kanon.get("rows_out"),
        "rows_missing_quasi_identifier": kanon.get("rows_missing_quasi_identifier"),
        "suppressed_records": kanon.get("suppressed_records"),
        "suppressed_share": kanon.get("suppressed_share"),
        "suppression_limit": kanon.get("suppression_limit"),
        "classes": kanon.get("classes") or {},
        "utility": {"metric": kanon.get("metric"),
                    "information_loss": kanon.get("information_loss") or {}},
        "risk": risk,
        "risk_before": ((kanon.get("risk") or {}).get("input") or None),
        "persons": kanon.get("persons"),
        "max_records_per_person": (kanon.get("cap") or {}).get("max_records_per_person"),
        "rows_capped": (kanon.get("cap") or {}).get("rows_capped"),
        "headline_risk": headline_risk(risk, kanon.get("persons")),
    }


def headline_risk(risk: dict | None, persons: dict | None) -> dict[str, Any] | None:
    """The worst of the release's own re-identification measures (never the mildest).

    Measures: prosecutor, journalist (highest per record), marketer (average) and, when the
    release counts persons, the person-level prosecutor risk (1 / fewest persons per class).
    """
    measures: dict[str, float] = {}
    for name in ("prosecutor", "journalist"):
        value = ((risk or {}).get(name) or {}).get("max")
        if value is not None:
            measures[f"{name} (highest)"] = float(value)
    value = ((risk or {}).get("marketer") or {}).get("average")
    if value is not None:
        measures["marketer (average)"] = float(value)
    if persons and persons.get("prosecutor_max") is not None:
        measures["person-level prosecutor (highest)"] = float(persons["prosecutor_max"])
    if not measures:
        return None
    worst = max(measures, key=lambda k: measures[k])
    return {"value": measures[worst], "measure": worst, "measures": measures}


def _dp_section(privacy: PrivacyStatement, outputs: Path, dataset: str, partition: str, spends: list[dict],
                caps: dict[str, dict]) -> dict[str, Any]:
    details = privacy.details
    mine = [s for s in spends if s["dataset"] == dataset and s["partition"] == partition]
    accounts = sorted({(s["privacy_unit"], s["period"]) for s in mine})
    totals = collect.unit_totals(spends)
    per_unit = []
    for u, month in accounts:
        t = totals[(u, month)]
        cap = caps.get(u) or {}
        per_unit.append({
            "privacy_unit": u, "month": month,
            "epsilon": t["epsilon"], "delta": t["delta"],
            "cap_epsilon": cap.get("epsilon"), "cap_period": cap.get("period"),
            "datasets": t["datasets"],
            "by_partition": [{"partition": p, "datasets": v}
                             for p, v in sorted(t["by_partition"].items())],
        })
    return {
        "privacy_unit": ", ".join(privacy.units),
        "ledger_spends": [{k: s[k] for k in ("privacy_unit", "period", "epsilon", "delta",
                                             "policy_hash", "recorded_at")} for s in mine],
        "budget": _budget(privacy),
        "spent": privacy.to_dict().get("spent"),
        "spent_per_unit": dict(privacy.spent),
        "ledger": details.get("ledger"),
        "contribution_bounding": details.get("contribution_bounding"),
        "noise_library": details.get("noise_library"),
        "products": collect.dp_products(privacy, outputs),
        "portal_totals": per_unit,
        # The unit actually bounded (person- or event-level) and, for a person-level unit,
        # how many input rows had no identifier (each its own unit).
        "privacy_unit_level": details.get("privacy_unit_level"),
        "privacy_unit_description": details.get("privacy_unit_description"),
        "rows_without_unit_identifier": details.get("rows_without_unit_identifier"),
        # The granularity ladder's choice and its predictions (public information only).
        "granularity": details.get("granularity"),
        "post_processing_effect": details.get("post_processing_effect"),
    }


def _suppression_section(outputs: Path, pkg_privacy: dict, manifest: dict | None,
                         params: dict[str, Any]) -> dict[str, Any]:
    import pyarrow.parquet as pq

    parquet = outputs / "part-0.parquet"
    cells = suppressed = None
    if parquet.exists():
        t = pq.read_table(parquet)
        cells = t.num_rows
        if "suppressed" in t.column_names:
            suppressed = sum(bool(v) for v in t["suppressed"].to_pylist())
    threshold = params.get("threshold") or (manifest or {}).get("parameters", {}).get(
        "suppression_k", pkg_privacy.get("suppression_threshold"))
    unit = pkg_privacy.get("privacy_unit") or (params.get("units") or [None])[0]
    return {"threshold": threshold, "unit": unit, "cells": cells,
            "cells_suppressed": suppressed}


def _changes(layout: RunLayout, store: ReviewStore, packages: dict, dataset: str,
             partition: str, report: dict) -> dict[str, Any]:
    """What differs from the dataset's previous release (policy hash and parameters)."""
    pkg = packages.get(dataset)
    earlier = sorted({*collect.published_partitions(pkg or {}),
                      *collect.staged_partitions(layout, dataset)})
    earlier = [p for p in earlier if p < partition]
    if not earlier:
        return {"previous_partition": None, "first_release": True, "policy_changed": None,
                "parameters": []}
    prev = _light(layout, store, packages, dataset, earlier[-1])
    before, after = _flat(prev["parameters"]), _flat(report["parameters"])
    diffs = [{"key": k, "before": before.get(k), "after": after.get(k)}
             for k in sorted(set(before) | set(after)) if before.get(k) != after.get(k)]
    return {"previous_partition": earlier[-1], "first_release": False,
            "previous_policy_hash": prev["policy"]["hash"],
            "policy_changed": prev["policy"]["hash"] != report["policy"]["hash"],
            "parameters": diffs}


def _light(layout: RunLayout, store: ReviewStore, packages: dict, dataset: str,
           partition: str) -> dict[str, Any]:
    """Policy and parameters of an earlier release (without building its whole report)."""
    pkg = packages.get(dataset)
    outputs = layout.root / "outputs" / dataset / partition
    reports = layout.root / "reports" / dataset / partition
    pkg_privacy = (pkg or {}).get("opencity", {}).get("privacy", {})
    registered = _registered(store, dataset, partition)
    if registered is not None:
        return {"policy": {"hash": registered.policy_hash},
                "parameters": dict(registered.params)}
    passes = [p for p in store.passes(dataset) if p["partition"] == partition]
    if passes:
        return {"policy": {"hash": passes[-1]["policy_hash"]},
                "parameters": passes[-1]["parameters"]}
    method = collect.privacy_method(pkg, outputs, reports)
    kanon = collect._json(reports / "kanon-report.json") if (
        reports / "kanon-report.json").exists() else None
    privacy = collect.statement(outputs)
    return {"policy": collect.policy_of_release(store, dataset, partition, pkg_privacy),
            "parameters": release_parameters(method, kanon, privacy,
                                             collect.manifest_for(layout, dataset, partition),
                                             pkg_privacy)}


# ------------------------------------------------------------------ portal
def build_portal_report(run_dir: str | Path, releases: list[dict] | None = None, *,
                        state_url: str | None = None) -> dict[str, Any]:
    """Every dataset with its releases, each unit's budget per month, approvals, withdrawals."""
    layout = RunLayout(Path(run_dir))
    store = ReviewStore(state_url)
    packages = collect.catalog_packages(layout)
    spends = collect.ledger_spends(state_url)
    if releases is None:
        releases = [build_release_report(layout.root, d, p, store=store, packages=packages,
                                         spends=spends)
                    for d, p in release_keys(layout, packages, store)]
    by_ds: dict[str, list[dict]] = {}
    for r in releases:
        by_ds.setdefault(r["dataset"], []).append(r)
    caps = collect.unit_caps()
    budget = []
    non_dp = collect.non_dp_releases(state_url)
    for (unit, month), t in sorted(collect.unit_totals(spends).items()):
        cap = caps.get(unit) or {}
        cap_eps = cap.get("epsilon") if cap.get("period") in ("month", None) else None
        budget.append({
            "privacy_unit": unit, "month": month, "epsilon_spent": t["epsilon"],
            "delta_spent": t["delta"], "epsilon_cap": cap_eps,
            "epsilon_remaining": None if cap_eps is None else max(0.0, cap_eps - t["epsilon"]),
            "cap_note": None if cap_eps is not None else (
                f"cap is per {cap['period']} ({cap.get('epsilon')})" if cap else
                "no cap recorded"),
            "datasets": t["datasets"],
            "by_partition": [{"partition": p, "datasets": v}
                             for p, v in sorted(t["by_partition"].items())],
            "non_dp_releases": [r for r in non_dp
                                if (r["privacy_unit"], r["period"]) == (unit, month)],
        })
    return {
        "schema": PORTAL_SCHEMA_ID,
        "generated_at": _now(),
        "run_dir": str(layout.root),
        "datasets": [{
            "name": name,
            "title": rs[0]["title"],
            "privacy_method": rs[0]["privacy_method"],
            "releases": [{"partition": r["partition"], "status": r["status"],
                          "policy_hash": r["policy"]["hash"],
                          "policy_approved": r["policy"]["approved"],
                          "summary": release_summary(r),
                          "report": f"releases/{name}/{r['partition']}.html"} for r in rs],
        } for name, rs in sorted(by_ds.items())],
        "budget": budget,
        # releases that spend no epsilon (k-anonymous microdata: k persons per group)
        "non_dp_releases": non_dp,
        "approvals": {"open": [r.as_dict() for r in store.requests(status=OPEN)],
                      "decisions": [d.as_dict() for d in store.decisions()]},
        "withdrawn": [w.as_dict() for w in store.withdrawals()],
    }


def release_keys(layout: RunLayout, packages: dict[str, dict], store: ReviewStore
                 ) -> list[tuple[str, str]]:
    """(dataset, partition) of every published, staged, requested or withdrawn release."""
    keys: set[tuple[str, str]] = set()
    for name, pkg in packages.items():
        keys |= {(name, p) for p in collect.published_partitions(pkg)}
    for name in collect.datasets(layout):
        keys |= {(name, p) for p in collect.staged_partitions(layout, name)}
    keys |= {(r.dataset, r.partition) for r in store.requests()}
    keys |= {(w.dataset, w.partition) for w in store.withdrawals()}
    return sorted(keys)


def release_summary(r: dict[str, Any]) -> str:
    """One line a non-programmer can read: the guarantee of the release."""
    if r.get("microdata") and r["microdata"].get("achievable"):
        m = r["microdata"]
        head = m.get("headline_risk") or {}
        risk = head.get("value")
        bits = [f"k = {m['k']}" + (" persons" if m.get("persons") else "")]
        if m.get("l"):
            bits.append(f"l = {m['l']}")
        if m.get("t"):
            bits.append(f"t = {m['t']}")
        bits.append(f"{m.get('suppressed_records') or 0} records removed")
        if m.get("max_records_per_person"):
            bits.append(f"at most {m['max_records_per_person']} records per person")
        if risk is not None:
            bits.append(f"highest re-identification risk {risk:.2%} ({head['measure']})")
        return ", ".join(bits)
    if r.get("dp"):
        spends = r["dp"].get("ledger_spends") or []
        if spends:
            per = ", ".join(f"ε {s['epsilon']:g} per {s['privacy_unit']}" for s in spends)
        else:
            eps = sum(p.get("epsilon") or 0 for p in r["dp"]["products"])
            per = f"ε {eps:g} per {r['dp']['privacy_unit']}"
        level = r["dp"].get("privacy_unit_level")
        if level:
            per += f" ({level}-level unit)"
        gran = (r["dp"].get("granularity") or {}).get("level")
        return (f"differential privacy, {per} for this release, "
                f"{len(r['dp']['products'])} products"
                + (f", granularity {gran}" if gran else ""))
    if r.get("suppression"):
        s = r["suppression"]
        text = f"counts of fewer than {s['threshold']} {s.get('unit') or 'people'}s withheld"
        if s.get("cells") is not None:
            text += f" ({s.get('cells_suppressed')} of {s.get('cells')} cells)"
        return text
    return r["privacy_method"]


# ------------------------------------------------------------------ writing
def validate(report: dict[str, Any], schema_path: Path) -> None:
    """Raise jsonschema.ValidationError when ``report`` does not match its schema."""
    import jsonschema

    schema = json.loads(schema_path.read_text(encoding="utf-8"))
    jsonschema.validate(report, schema)


def _write(path: Path, text: str) -> None:
    from opencity.io import write_text_atomic

    write_text_atomic(text, path)  # where the officer asked (--out): the umask decides


def write_release_report(run_dir: str | Path, dataset: str, partition: str, out: str | Path,
                         **kw: Any) -> tuple[dict, Path]:
    """Build, validate and write one release report; returns (report, html path)."""
    from opencity.review import render

    report = build_release_report(run_dir, dataset, partition, **kw)
    validate(report, RELEASE_SCHEMA)
    base = Path(out) / "releases" / dataset / partition
    _write(base.with_suffix(".json"), json.dumps(report, indent=2, sort_keys=True,
                                                 default=str))
    html_path = base.with_suffix(".html")
    _write(html_path, render.release_html(report, html_path.parent))
    return report, html_path


def write_reports(run_dir: str | Path, out: str | Path, *, state_url: str | None = None,
                  raw_dir: str | Path | None = None) -> dict[str, Any]:
    """Write every release report and the portal report; returns their paths and counts."""
    from opencity.review import render

    layout = RunLayout(Path(run_dir).resolve())
    out = Path(out).resolve()
    store = ReviewStore(state_url)
    packages = collect.catalog_packages(layout)
    spends = collect.ledger_spends(state_url)
    releases = []
    for dataset, partition in release_keys(layout, packages, store):
        report, _ = write_release_report(layout.root, dataset, partition, out, store=store,
                                         packages=packages, spends=spends, raw_dir=raw_dir)
        releases.append(report)
    portal = build_portal_report(layout.root, releases, state_url=state_url)
    validate(portal, PORTAL_SCHEMA)
    _write(out / "portal.json", json.dumps(portal, indent=2, sort_keys=True, default=str))
    _write(out / "index.html", render.portal_html(portal, out))
    return {"index": str(out / "index.html"), "portal_json": str(out / "portal.json"),
            "releases": len(releases), "open_approvals": len(portal["approvals"]["open"]),
            "withdrawn": len(portal["withdrawn"])}
