"""``anonymize``: the pure transform (table + hierarchies + model in, released table out)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from opencity.errors import ConfigError, DataQualityError, InternalError, NotAchievableError
from privacy.kanon.hierarchy import NULL_LABEL, TOP, Hierarchy
from privacy.kanon.lattice import (
    EXTRA_METRICS,
    METRICS,
    Classes,
    Criteria,
    Problem,
    build_problem,
    information_loss,
    node_classes,
    search,
)
from privacy.kanon.models import KAnonymity, LDiversity, TCloseness
from privacy.kanon.persons import Units, build_units, unit_summary
from privacy.kanon.report import build_report

Suppression = Literal["mask", "remove"]


@dataclass(frozen=True)
class Result:
    """Outcome of :func:`anonymize`.

    Attributes:
        table: the release: QIs generalized (strings); suppressed records have every QI
            set to '*' (``suppression="mask"``, as ARX) or are dropped (``"remove"``).
        generalization: QI -> chosen level (0 = original value).
        report: JSON-ready risk and utility report (see ``privacy.kanon`` docs).
        suppressed_mask: bool numpy array over input rows, True where suppressed.
    """

    table: pa.Table
    generalization: dict[str, int]
    report: dict[str, Any]
    suppressed_mask: np.ndarray = field(repr=False)


def _to_arrow(table: Any) -> pa.Table:
    if isinstance(table, pa.Table):
        return table
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover
        pd = None
    if pd is not None and isinstance(table, pd.DataFrame):
        return pa.Table.from_pandas(table, preserve_index=False)
    raise ConfigError(f"anonymize expects a pyarrow.Table or pandas.DataFrame, got {type(table)}")


@dataclass
class Prepared:
    """Encoded input shared by search, verification and reporting (internal)."""

    table: pa.Table
    qis: tuple[str, ...]
    hierarchies: list[Hierarchy]
    leaf_codes: list[np.ndarray]
    problem: Problem
    criteria: Criteria
    sensitive: str | None
    units: Units | None = None
    sens_codes: np.ndarray | None = None


def prepare(table: Any, hierarchies: Mapping[str, Hierarchy], model: KAnonymity,
            l_diversity: LDiversity | None = None,
            t_closeness: TCloseness | None = None) -> Prepared:
    """Validate inputs and encode every QI and the sensitive attribute."""
    tab = _to_arrow(table)
    if not isinstance(model, KAnonymity):
        raise ConfigError("model must be a KAnonymity instance")
    if tab.num_rows == 0:
        raise DataQualityError("the input has no rows; nothing to anonymize")
    qis = model.quasi_identifiers
    for q in qis:
        if q not in hierarchies:
            raise ConfigError(f"no hierarchy given for quasi-identifier {q!r}")
        if not isinstance(hierarchies[q], Hierarchy):
            raise ConfigError(f"hierarchy for {q!r} must be a Hierarchy")
        h = hierarchies[q]
        if h.prepare is None and q not in tab.column_names:
            raise DataQualityError(
                f"quasi-identifier column {q!r} is not in the input "
                f"(columns: {', '.join(tab.column_names)})"
            )
    hs = [hierarchies[q] for q in qis]
    codes = [h.encode(tab, q) for h, q in zip(hs, qis, strict=True)]
    sensitive = None
    for crit in (l_diversity, t_closeness):
        if crit is None:
            continue
        if sensitive is not None and crit.sensitive != sensitive:
            raise ConfigError("l-diversity and t-closeness must use the same sensitive column")
        sensitive = crit.sensitive
    sens_codes = None
    m = 1
    ordered = False
    if sensitive is not None:
        if sensitive in qis:
            raise ConfigError(f"sensitive column {sensitive!r} cannot also be a quasi-identifier")
        if sensitive not in tab.column_names:
            raise DataQualityError(
                f"sensitive column {sensitive!r} is not in the input "
                f"(columns: {', '.join(tab.column_names)})"
            )
        col = tab.column(sensitive).combine_chunks()
        numeric = pa.types.is_integer(col.type) or pa.types.is_floating(col.type)
        if t_closeness is not None:
            ordered = t_closeness.distance == "ordered" or (
                t_closeness.distance == "auto" and numeric
            )
        if numeric:
            values = col
        else:
            values = pc.fill_null(pc.cast(col, pa.string()), NULL_LABEL)
        if values.null_count:
            raise DataQualityError(
                f"sensitive column {sensitive!r} has missing values (first at row "
                f"{int(pc.index(pc.is_null(values), True).as_py()) + 1}); fill or drop them"
            )
        domain = pc.unique(values).sort()  # ARX orders by value for ordered distance
        sens_codes = pc.index_in(values, value_set=domain).to_numpy().astype(np.int64)
        m = len(domain)
        if l_diversity is not None and l_diversity.variant != "entropy" and l_diversity.l > m:
            raise ConfigError(
                f"l={l_diversity.l} is larger than the number of distinct values of the "
                f"sensitive column {sensitive!r} ({m}); no class can be {l_diversity.l}-diverse"
            )
        if l_diversity is not None and l_diversity.variant == "entropy" and l_diversity.l > m:
            raise ConfigError(
                f"entropy l={l_diversity.l} exceeds the {m} distinct values of {sensitive!r}"
            )
    problem = build_problem(codes, hs, sens_codes, m)
    crit = Criteria(
        k=model.k,
        max_outliers=math.floor(model.max_suppression * tab.num_rows),
        l=None if l_diversity is None else float(l_diversity.l),
        l_variant=None if l_diversity is None else l_diversity.variant,
        c=None if l_diversity is None else l_diversity.c,
        t=None if t_closeness is None else float(t_closeness.t),
        t_ordered=ordered,
    )
    units = None
    if model.unit is not None:
        if model.unit not in tab.column_names:
            raise DataQualityError(
                f"privacy-unit column {model.unit!r} is not in the input "
                f"(columns: {', '.join(tab.column_names)})")
        if model.unit == sensitive:
            raise ConfigError(f"the privacy-unit column {model.unit!r} cannot be the "
                              "sensitive column")
        ucol = pc.cast(tab.column(model.unit).combine_chunks(), pa.string())
        if ucol.null_count:
            raise DataQualityError(
                f"privacy-unit column {model.unit!r} has missing values (first at row "
                f"{int(pc.index(pc.is_null(ucol), True).as_py()) + 1}); every record needs "
                "its unit")
        enc = pc.dictionary_encode(ucol)
        ucodes = enc.indices.to_numpy().astype(np.int64)
        person_l = None
        if l_diversity is not None:
            if l_diversity.variant != "distinct":
                raise ConfigError("with a privacy-unit column only distinct l-diversity is "
                                  f"counted over units; got {l_diversity.variant!r}")
            person_l = int(l_diversity.l)
        units = build_units(codes, hs, ucodes, len(enc.dictionary), sens_codes, m, person_l)
    return Prepared(tab, qis, hs, codes, problem, crit, sensitive, units, sens_codes)


def anonymize(table: Any, hierarchies: Mapping[str, Hierarchy], model: KAnonymity,
              metric: str = "nu-entropy", l_diversity: LDiversity | None = None,
              t_closeness: TCloseness | None = None, *, suppression: Suppression = "mask",
              risk_threshold: float = 0.2, progress: bool = False) -> Result:
    """Release ``table`` under the globally optimal full-domain generalization.

    Args:
        table: pyarrow.Table or pandas.DataFrame with the QI (and sensitive) columns.
        hierarchies: QI column -> Hierarchy (all of ``model.quasi_identifiers``).
        model: k-anonymity parameters (k, QIs, suppression limit).
        metric: objective to minimise, one of nu-entropy (default), loss,
            discernibility, aecs, precision (ARX definitions).
        l_diversity, t_closeness: optional extra models on one sensitive column.
        suppression: "mask" (ARX: QIs of suppressed records become '*') or "remove".
        risk_threshold: records whose re-identification risk exceeds this are "at risk".
        progress: show a tqdm bar on stderr while searching the lattice.

    Returns:
        :class:`Result`. Raises NotAchievableError when no node satisfies the models
        within the suppression limit (nothing is released).
    """
    if metric not in METRICS + EXTRA_METRICS:
        raise ConfigError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
    if suppression not in ("mask", "remove"):
        raise ConfigError(f"suppression must be 'mask' or 'remove', got {suppression!r}")
    if isinstance(risk_threshold, bool) or not isinstance(risk_threshold, (int, float)) or not (
        0.0 < risk_threshold <= 1.0
    ):
        raise ConfigError(f"risk_threshold must be in (0, 1], got {risk_threshold!r}")
    prep = prepare(table, hierarchies, model, l_diversity, t_closeness)
    bar = None
    if progress:
        from tqdm import tqdm

        total = int(np.prod(prep.problem.heights + 1))
        bar = tqdm(total=total, desc="lattice nodes", unit="node", leave=False, mininterval=0.5)
    try:
        res = search(prep.problem, prep.criteria, metric, progress=bar,
                     units=prep.units)
    finally:
        if bar is not None:
            bar.close()
    if res.levels is None:
        raise NotAchievableError(
            f"not achievable with these settings: no generalization of "
            f"{', '.join(prep.qis)} reaches k={model.k}"
            + (f" distinct {model.unit} values per class" if model.unit else "")
            + (f" with {l_diversity.variant}-l-diversity l={l_diversity.l}" if l_diversity else "")
            + (f" and t-closeness t={t_closeness.t}" if t_closeness else "")
            + f" while suppressing at most {model.max_suppression:.2%} of "
            f"{prep.table.num_rows} records. Raise the suppression limit, lower k/l or t, "
            "or use coarser hierarchies."
        )
    return release(prep, res.levels, res.classes, metric=metric, suppression=suppression,
                   risk_threshold=risk_threshold, model=model, l_diversity=l_diversity,
                   t_closeness=t_closeness, search_stats=res)


def release(prep: Prepared, levels: tuple[int, ...], classes: Classes | None, *, metric: str,
            suppression: Suppression, risk_threshold: float, model: KAnonymity,
            l_diversity: LDiversity | None, t_closeness: TCloseness | None,
            search_stats: Any = None) -> Result:
    """Apply node ``levels`` to the input and build the report."""
    p = prep.problem
    if classes is None:
        classes = node_classes(p, levels, prep.criteria, units=prep.units)
    # class key of every record at this node (vectorized over rows)
    row_key = np.zeros(prep.table.num_rows, dtype=np.int64)
    level_codes = []
    for j, h in enumerate(prep.hierarchies):
        lc = h.leaf_codes(levels[j])[prep.leaf_codes[j]]
        level_codes.append(lc)
        row_key += lc * (p.strides[j] // p.m)
    failing_keys = classes.keys[classes.failing]
    suppressed = np.isin(row_key, failing_keys) if len(failing_keys) else np.zeros(
        len(row_key), dtype=bool)
    if int(suppressed.sum()) != classes.suppressed:
        raise InternalError("suppressed record count differs between search and release")
    out = prep.table
    drop = {c for h in prep.hierarchies for c in h.source_columns}
    for j, (q, h) in enumerate(zip(prep.qis, prep.hierarchies, strict=True)):
        labels = pa.array(h.labels(levels[j]), pa.string())
        col = labels.take(pa.array(level_codes[j]))
        if suppression == "mask" and suppressed.any():
            col = pc.if_else(pa.array(suppressed), pa.scalar(TOP), col)
        if q in out.column_names:
            out = out.set_column(out.column_names.index(q), q, col)
        else:
            out = out.append_column(q, col)
    if model.unit is not None:
        drop.add(model.unit)  # the unit column is never released
    keep_cols = [c for c in out.column_names if c not in drop or c in prep.qis]
    out = out.select(keep_cols)
    if suppression == "remove" and suppressed.any():
        out = out.filter(pa.array(~suppressed))
    generalization = {q: int(levels[j]) for j, q in enumerate(prep.qis)}
    losses = information_loss(p, levels, classes)
    report = build_report(
        prep=prep, levels=levels, classes=classes, model=model, metric=metric,
        losses=losses, suppression=suppression, risk_threshold=risk_threshold,
        l_diversity=l_diversity, t_closeness=t_closeness, search_stats=search_stats,
        input_classes=_input_classes(p),
    )
    if prep.units is not None:
        kept = ~suppressed
        persons = unit_summary(row_key[kept], prep.units.codes[kept],
                               None if prep.sens_codes is None else prep.sens_codes[kept],
                               model.k)
        if persons["classes_below_k_persons"]:
            raise InternalError("a released class has fewer than k persons; this is a bug")
        report["persons"] = {"unit": model.unit, "k": model.k, **persons}
        report["risk"]["person"] = {
            "prosecutor": {"max": persons["prosecutor_max"],
                           "average": persons["prosecutor_average"]},
            "max_person_share": persons["max_person_share"],
        }
    return Result(out, generalization, report, suppressed)


def _input_classes(p: Problem) -> np.ndarray:
    """Class sizes of the original data (all QIs at level 0)."""
    if p.m == 1:
        return p.cell_counts
    cls = p.cell_keys // p.m
    starts = np.flatnonzero(np.concatenate(([True], cls[1:] != cls[:-1])))
    return np.add.reduceat(p.cell_counts, starts)


def evaluate_node(table: Any, hierarchies: Mapping[str, Hierarchy], model: KAnonymity,
                  levels: Mapping[str, int] | tuple[int, ...], metric: str = "nu-entropy",
                  l_diversity: LDiversity | None = None,
                  t_closeness: TCloseness | None = None) -> dict[str, Any]:
    """Loss and anonymity of one given node (for comparing with ARX or a steward's choice)."""
    prep = prepare(table, hierarchies, model, l_diversity, t_closeness)
    if isinstance(levels, Mapping):
        lv = tuple(int(levels[q]) for q in prep.qis)
    else:
        lv = tuple(int(x) for x in levels)
    for j, h in enumerate(prep.hierarchies):
        if not 0 <= lv[j] <= h.height:
            raise ConfigError(
                f"level {lv[j]} for {prep.qis[j]!r} is outside 0..{h.height}"
            )
    cls = node_classes(prep.problem, lv, prep.criteria, units=prep.units)
    return {
        "anonymous": cls.suppressed <= prep.criteria.max_outliers,
        "suppressed_records": cls.suppressed,
        "information_loss": information_loss(prep.problem, lv, cls),
    }
