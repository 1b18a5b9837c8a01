"""Person-level k-anonymity and l-diversity: classes counted in privacy units, not records.

A record-level k says nothing when one person fills a class: five requests of one requester
make a "5-anonymous" class that is that requester. With a privacy-unit column (the requester
pseudonym) every class must hold:

* **k distinct units** (persons), not k records;
* **distinct l-diversity over units**: at least ``l`` distinct sensitive values even without
  the records of any ONE unit, so no single person makes a class look diverse (when every
  value of a class comes from different persons this is plain distinct-l-diversity).

Both predicates are monotone under generalization (a merged class that fails is a union of
classes that all fail), so the lattice search keeps ARX's predictive tagging.

Layout: the same cell encoding as :mod:`privacy.kanon.lattice`, with the "sensitive" digit
replaced by ``unit * m + sensitive`` (m = number of sensitive codes, 1 without one): a cell
is one (class, unit, sensitive value) with its record count, so class keys (``key // M``)
are the same as the record-level problem's and the verdicts line up class by class.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from privacy.kanon.hierarchy import Hierarchy
from privacy.kanon.lattice import Problem, _run_starts, build_problem


@dataclass
class Units:
    """Encoded privacy units of the input rows (internal).

    Attributes:
        problem: cells (class, unit, sensitive) with record counts.
        codes: unit code of every input row (0..n_units-1).
        n_units: number of distinct units.
        m: number of sensitive codes (1 without a sensitive attribute).
        l: person-level distinct l (None: no l-diversity).
    """

    problem: Problem
    codes: np.ndarray
    n_units: int
    m: int
    l: int | None

    @property
    def M(self) -> int:  # the combined radix (unit * m + sensitive)
        return self.problem.m


def build_units(leaf_codes: Sequence[np.ndarray], hierarchies: Sequence[Hierarchy],
                unit_codes: np.ndarray, n_units: int, sens_codes: np.ndarray | None, m: int,
                l: int | None) -> Units:
    """Cells of (QI leaves, unit, sensitive value) for the unit-level verdicts."""
    m = max(m, 1)
    combined = unit_codes.astype(np.int64) * m
    if sens_codes is not None:
        combined = combined + sens_codes
    problem = build_problem(leaf_codes, hierarchies, combined, max(n_units * m, 1))
    return Units(problem, unit_codes, n_units, m, l)


def unit_failing(u: Units, keys: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Class keys of a node's unit cells and whether each class fails the unit models.

    Args:
        u: the encoded units.
        keys: the node's unit cells (sorted, distinct), as rolled up by the lattice.
        k: fewest distinct units per class.

    Returns:
        (class keys sorted, failing bool per class).
    """
    cls = keys // u.M
    rest = keys % u.M
    unit = rest // u.m
    starts = _run_starts(cls)
    ckeys = cls[starts]
    n_cells = len(keys)
    # keys are sorted by (class, unit, sensitive): a new unit starts where (class, unit) changes
    new_unit = np.ones(n_cells, dtype=bool)
    if n_cells:
        new_unit[1:] = (cls[1:] != cls[:-1]) | (unit[1:] != unit[:-1])
    units_per_class = np.add.reduceat(new_unit.astype(np.int64), starts) if n_cells else \
        np.zeros(0, dtype=np.int64)
    failing = units_per_class < k
    if u.l is not None and u.l > 1 and u.m > 1:
        failing |= _robust_distinct(cls, unit, rest % u.m, starts, u.m) < u.l
    return ckeys, failing


def _robust_distinct(cls: np.ndarray, unit: np.ndarray, sens: np.ndarray, starts: np.ndarray,
                     m: int) -> np.ndarray:
    """Per class: distinct sensitive values left after removing the worst single unit."""
    n_classes = len(starts)
    class_idx = np.repeat(np.arange(n_classes), np.diff(np.append(starts, len(cls))))
    pair = class_idx.astype(np.int64) * m + sens
    order = np.argsort(pair, kind="stable")
    pair_sorted = pair[order]
    pstarts = _run_starts(pair_sorted)
    holders = np.diff(np.append(pstarts, len(pair_sorted)))  # units holding each value
    pair_class = class_idx[order][pstarts]
    distinct = np.bincount(pair_class, minlength=n_classes)
    # values held by one unit only: how many does each (class, unit) hold alone?
    sole = holders == 1
    sole_class = pair_class[sole]
    sole_unit = unit[order][pstarts][sole]
    worst = np.zeros(n_classes, dtype=np.int64)
    if len(sole_class):
        cu = sole_class.astype(np.int64) * (int(unit.max()) + 1) + sole_unit
        vals, cnt = np.unique(cu, return_counts=True)
        np.maximum.at(worst, vals // (int(unit.max()) + 1), cnt)
    return distinct - worst


def unit_summary(row_class: np.ndarray, unit_codes: np.ndarray, sens: np.ndarray | None,
                 k: int) -> dict[str, Any]:
    """Person-level figures of released records (no values): classes, persons, shares.

    Args:
        row_class: class key of every released record.
        unit_codes: unit code of every released record.
        sens: sensitive code of every released record (None without one).
        k: the required persons per class.
    """
    if len(row_class) == 0:
        return {"classes": 0, "persons": 0, "min_persons": 0, "classes_below_k_persons": 0,
                "classes_single_person": 0, "max_person_share": 0.0,
                "classes_k_records_of_one_person": 0,
                "prosecutor_max": 0.0, "prosecutor_average": 0.0}
    _, cls = np.unique(row_class, return_inverse=True)
    n_classes = int(cls.max()) + 1
    pair = cls.astype(np.int64) * (int(unit_codes.max()) + 1) + unit_codes
    pvals, pcounts = np.unique(pair, return_counts=True)
    pclass = pvals // (int(unit_codes.max()) + 1)
    persons = np.bincount(pclass, minlength=n_classes)
    sizes = np.bincount(cls, minlength=n_classes)
    top = np.zeros(n_classes, dtype=np.int64)
    np.maximum.at(top, pclass, pcounts)
    return {
        "classes": n_classes,
        "persons": len(np.unique(unit_codes)),
        "min_persons": int(persons.min()),
        "classes_below_k_persons": int((persons < k).sum()),
        "classes_single_person": int((persons == 1).sum()),
        "max_person_share": float((top / sizes).max()),
        # classes where one person alone holds k records (looks k-anonymous over records)
        "classes_k_records_of_one_person": int((top >= k).sum()),
        # a person's re-identification risk in a class of p persons is 1/p
        "prosecutor_max": float(1.0 / persons.min()),
        "prosecutor_average": float(n_classes / persons.sum()),
    }


def cap_per_unit(table: Any, unit: str, order_by: Sequence[str], cap: int
                 ) -> tuple[Any, dict[str, int]]:
    """Keep at most ``cap`` records of every unit: its first ones in ``order_by`` order.

    Args:
        table: pyarrow.Table with the ``unit`` column (no nulls) and the ``order_by`` columns.
        unit: the privacy-unit column.
        order_by: columns ordering a unit's records (e.g. creation time, then request id),
            so the choice is deterministic and a rerun releases the same records.
        cap: records kept per unit, >= 1.

    Returns:
        The kept rows (in input order) and figures: rows_capped, units_capped,
        max_records_per_unit_before.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(cap, bool) or not isinstance(cap, int) or cap < 1:
        from opencity.errors import ConfigError

        raise ConfigError(f"the cap on records per person must be an integer >= 1, got {cap!r}")
    n = table.num_rows
    if n == 0:
        return table, {"rows_capped": 0, "units_capped": 0, "max_records_per_unit_before": 0}
    idx = pa.array(np.arange(n, dtype=np.int64))
    keyed = table.select([unit, *order_by]).append_column("__row", idx)
    keyed = keyed.sort_by([(unit, "ascending"), *[(c, "ascending") for c in order_by],
                           ("__row", "ascending")])
    codes = pc.dictionary_encode(keyed.column(unit).combine_chunks()).indices.to_numpy()
    starts = np.flatnonzero(np.concatenate(([True], codes[1:] != codes[:-1])))
    lengths = np.diff(np.append(starts, n))
    rank = np.arange(n) - np.repeat(starts, lengths)
    keep_rows = np.sort(keyed.column("__row").to_numpy()[rank < cap])
    figures = {"rows_capped": int(n - len(keep_rows)),
               "units_capped": int((lengths > cap).sum()),
               "max_records_per_unit_before": int(lengths.max())}
    return table.take(pa.array(keep_rows)), figures
