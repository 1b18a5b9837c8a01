"""The composition guard: the attacks on a release, run as checks before it is published.

Each check is a pure function over Arrow tables (the new release and what is already
published from the same source period) returning a :class:`Check`; :func:`guard` bundles them
into a :class:`GuardReport`, which a pipeline writes to ``reports/<dataset>/dt=.../guard.json``
and raises on (:class:`opencity.errors.GuardError`) before anything is published, like a failed
GX suite. Reports hold counts and column names only, never row values.

Checks:

* :func:`microdata_classes` - k and l recomputed over EVERY published non-sensitive column of
  a microdata release (not only the declared quasi-identifiers), and the published columns
  equal to the policy's list.
* :func:`withheld_cells` - small-count suppression: each withheld cell's feasible interval
  from the margins other releases publish (per-type and per-district totals, per-cell floors
  of records that still carry the cell's keys, e.g. the k-anonymous microdata) and from the
  table's own row/column structure; a cell is *recovered* when the interval is one value,
  *exposed* when it is narrower than the threshold or its floor is above 0.
* :func:`dp_cells` - a DP table: every public key present, nothing withheld, an error bound
  per cell; reports (does not fail on) cells whose exact count another release implies, which
  is that release's disclosure, not the DP table's.
* :func:`kpi_rows` - a KPI table: methods public / dp / suppressed, suppressed rows empty, and
  rows from person-level sources never 'public'.
* :func:`margins_from_records` - per-key totals and floors an attacker reads off microdata.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from opencity.errors import ConfigError, GuardError
from opencity.io import write_json_atomic

WILDCARD = "*"


@dataclass(frozen=True)
class Check:
    """One guard check: its name, pass/fail and what is exposed (counts, column names)."""

    name: str
    passed: bool
    details: Mapping[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "passed": self.passed, **dict(self.details)}


@dataclass(frozen=True)
class GuardReport:
    """Every check of one release against the releases of its source period."""

    dataset: str
    partition: str
    checks: tuple[Check, ...]
    releases_considered: tuple[str, ...] = ()

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    def as_dict(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "partition": self.partition, "passed": self.passed,
                "releases_considered": list(self.releases_considered),
                "checks": [c.as_dict() for c in self.checks]}

    def write(self, path: str | Path) -> Path:
        """Write the JSON report (atomically) and return its path."""
        # the run's reports folder: a restricted zone (names releases not yet approved)
        return write_json_atomic(self.as_dict(), path, restricted=True, sort_keys=True,
                                 default=str)

    def raise_if_failed(self, path: str | Path | None = None) -> None:
        """Raise GuardError naming the failed checks (and the report) when any failed."""
        if self.passed:
            return
        failed = [c for c in self.checks if not c.passed]
        parts = []
        for c in failed:
            counts = ", ".join(f"{k}={v}" for k, v in c.details.items()
                               if isinstance(v, (int, float)) and not isinstance(v, bool))
            parts.append(f"{c.name} ({counts})" if counts else c.name)
        where = f"; report: {path}" if path else ""
        raise GuardError(
            f"composition guard refused {self.dataset} {self.partition}: "
            f"{'; '.join(parts)}{where}. Nothing was published; tighten the release "
            "(policy: larger k, generalize, DP instead of suppression) or withdraw the "
            "release it combines with")


def guard(dataset: str, partition: str, checks: Iterable[Check],
          releases_considered: Sequence[str] = ()) -> GuardReport:
    """Bundle checks into a report (pure)."""
    return GuardReport(dataset, partition, tuple(checks), tuple(releases_considered))


# --------------------------------------------------------------------------------------
# microdata


def microdata_classes(records: pa.Table, *, sensitive: Sequence[str], k: int, l: int = 1,
                      policy_columns: Sequence[str] | None = None) -> Check:
    """k and distinct-l over every published column that is not sensitive.

    Args:
        records: the microdata release as published.
        sensitive: the sensitive column(s) (each must be l-diverse in every class).
        k: minimum class size; l: minimum distinct sensitive values per class.
        policy_columns: the exact published columns the policy lists (None: not checked).
    """
    if k < 1 or l < 1:
        raise ConfigError(f"microdata_classes: k and l must be >= 1, got k={k}, l={l}")
    cols = [c for c in records.column_names if c not in sensitive]
    details: dict[str, Any] = {"k": k, "l": l, "columns": cols,
                               "sensitive": list(sensitive), "records": records.num_rows}
    ok = True
    if policy_columns is not None:
        extra = sorted(set(records.column_names) - set(policy_columns))
        missing = sorted(set(policy_columns) - set(records.column_names))
        details["columns_not_in_policy"] = extra
        details["policy_columns_missing"] = missing
        ok = ok and not extra
    if records.num_rows == 0:
        return Check("microdata_classes", ok, {**details, "classes": 0})
    aggs = [([], "count_all")] + [(s, "count_distinct") for s in sensitive]
    grouped = records.group_by(cols, use_threads=False).aggregate(aggs) if cols else None
    if grouped is None:
        sizes = [records.num_rows]
        div = [min(pc.count_distinct(records.column(s)).as_py() for s in sensitive)
               ] if sensitive else [l]
    else:
        sizes = grouped.column("count_all").to_pylist()
        div = ([min(v) for v in zip(*(grouped.column(f"{s}_count_distinct").to_pylist()
                                      for s in sensitive))] if sensitive else [l] * len(sizes))
    small = [s for s in sizes if s < k]
    low_l = [d for d in div if d < l]
    details.update(classes=len(sizes), min_class_size=min(sizes),
                   classes_below_k=len(small), records_below_k=sum(small),
                   min_distinct_sensitive=min(div), classes_below_l=len(low_l))
    return Check("microdata_classes", ok and not small and not low_l, details)


def margins_from_records(records: pa.Table, keys: Sequence[str]) -> dict[str, Any]:
    """What an attacker counts off a record-level release for the cells ``keys``.

    Returns ``{"totals": {key column: {value: records}}, "floors": {cell tuple: records}}``:
    per-value totals of each key column (records whose value is not generalized to '*'),
    and per-cell counts of records that carry every key ungeneralized (a lower bound of the
    cell; equal to it unless records were suppressed or dropped).
    """
    missing = [k for k in keys if k not in records.column_names]
    if missing:
        return {"totals": {}, "floors": {}}
    rows = records.select(list(keys)).to_pylist()
    totals: dict[str, dict[Any, int]] = {k: {} for k in keys}
    floors: dict[tuple, int] = {}
    for r in rows:
        for k in keys:
            v = r[k]
            if v is not None and v != WILDCARD:
                totals[k][v] = totals[k].get(v, 0) + 1
        cell = tuple(r[k] for k in keys)
        if all(v is not None and v != WILDCARD for v in cell):
            floors[cell] = floors.get(cell, 0) + 1
    return {"totals": totals, "floors": floors}


# --------------------------------------------------------------------------------------
# suppressed aggregates


def withheld_cells(table: pa.Table, *, keys: Sequence[str], count: str, threshold: int,
                   margins: Sequence[Mapping[str, Any]] = ()) -> Check:
    """Feasible interval of every withheld (NULL) cell given the margins other releases give.

    For each key column g and value v with a known total T (from ``margins[i]["totals"]``):
    the withheld cells W of that line hold T - (published sum of the line); a cell's upper
    bound is that remainder minus the floors of the other withheld cells of the line; its
    lower bound is the remainder when it is the only withheld cell of the line, and at least
    its own floor. A cell is recovered when lower == upper, exposed when its floor is above 0
    or upper - lower < threshold (narrower than what suppression itself discloses).

    Args:
        table: the suppressed table (NULL = withheld) with the key columns and ``count``.
        keys: cell key columns (e.g. district_id, request_type).
        count: the count column.
        threshold: the suppression threshold.
        margins: outputs of :func:`margins_from_records` of the other releases.
    """
    rows = table.select([*keys, count]).to_pylist()
    cells = {tuple(r[k] for k in keys): r[count] for r in rows}
    withheld = [c for c, v in cells.items() if v is None]
    floor = {c: 0 for c in withheld}
    upper: dict[tuple, float] = {c: float("inf") for c in withheld}
    lower = dict(floor)
    for m in margins:
        for c in withheld:
            floor[c] = max(floor[c], int(m.get("floors", {}).get(c, 0)))
    lower = dict(floor)
    for m in margins:
        for gi, g in enumerate(keys):
            for value, total in m.get("totals", {}).get(g, {}).items():
                line = [c for c in cells if c[gi] == value]
                if not line:
                    continue
                w = [c for c in line if cells[c] is None]
                if not w:
                    continue
                rest = total - sum(cells[c] for c in line if cells[c] is not None)
                for c in w:
                    others = sum(floor[o] for o in w if o != c)
                    upper[c] = min(upper[c], max(rest - others, 0))
                    if len(w) == 1:
                        lower[c] = max(lower[c], max(rest, 0))
    recovered = sum(1 for c in withheld if lower[c] >= upper[c])
    exposed = sum(1 for c in withheld
                  if lower[c] >= upper[c] or floor[c] > 0 or upper[c] - lower[c] < threshold)
    # Lines with exactly one withheld cell (recoverable by differencing once any total of
    # the line is published).
    singles = 0
    for gi, _g in enumerate(keys):
        lines: dict[Any, int] = {}
        for c in withheld:
            lines[c[gi]] = lines.get(c[gi], 0) + 1
        singles += sum(1 for n in lines.values() if n == 1)
    details = {"cells": len(cells), "withheld": len(withheld), "recovered_exactly": recovered,
               "exposed": exposed, "lines_with_one_withheld_cell": singles,
               "threshold": threshold, "margins_used": len(margins),
               "count_column": count, "key_columns": list(keys)}
    return Check("withheld_cells", exposed == 0 and singles == 0, details)


# --------------------------------------------------------------------------------------
# DP tables


def dp_cells(table: pa.Table, *, keys: Sequence[str], count: str, error_bound: str,
             public_keys: pa.Table, margins: Sequence[Mapping[str, Any]] = ()) -> Check:
    """A DP table publishes every public key, no NULL count and an error bound per cell.

    Also counts (informational) cells whose exact value another release implies through
    per-cell floors: that is the other release's disclosure (e.g. k-anonymous microdata with
    ungeneralized keys), listed so a reviewer sees it; it does not fail this check.
    """
    missing_cols = [c for c in (*keys, count, error_bound) if c not in table.column_names]
    if missing_cols:
        return Check("dp_cells", False, {"missing_columns": missing_cols})
    got = {tuple(r[k] for k in keys) for r in table.select(list(keys)).to_pylist()}
    want = {tuple(r[k] for k in keys) for r in public_keys.select(list(keys)).to_pylist()}
    nulls = table.column(count).null_count
    bad_bounds = pc.sum(pc.invert(pc.fill_null(pc.greater(table.column(error_bound), 0),
                                               False))).as_py() or 0
    implied = set()
    for m in margins:
        implied |= set(m.get("floors", {}))
    details = {"cells": table.num_rows, "public_keys": len(want),
               "keys_missing": len(want - got), "keys_not_public": len(got - want),
               "withheld": nulls, "cells_without_error_bound": bad_bounds,
               "cells_with_floor_in_other_releases": len(implied & got)}
    ok = not (want - got) and not (got - want) and nulls == 0 and bad_bounds == 0
    return Check("dp_cells", ok, details)


# --------------------------------------------------------------------------------------
# KPI table


def kpi_rows(table: pa.Table, *, person_sources: Sequence[str] = ()) -> Check:
    """KPI rows: method in public/dp/suppressed, suppressed rows empty, rows built from a
    person-level source (``person_sources``) never 'public'."""
    rows = table.select(["method", "value", "error_bound", "source_datasets"]).to_pylist()
    bad_method = sum(1 for r in rows if r["method"] not in ("public", "dp", "suppressed"))
    leaky = sum(1 for r in rows if r["method"] == "suppressed"
                and (r["value"] is not None or r["error_bound"] is not None))
    person = set(person_sources)
    public_person = sum(1 for r in rows if r["method"] == "public"
                        and person & set((r["source_datasets"] or "").split(",")))
    details = {"rows": len(rows), "unknown_method": bad_method,
               "suppressed_with_value": leaky, "public_rows_from_person_sources": public_person}
    return Check("kpi_rows", not (bad_method or leaky or public_person), details)
