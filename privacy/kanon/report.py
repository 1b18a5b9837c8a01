"""Risk and utility report of a k-anonymous release (JSON-ready dict, no record values).

Risk follows ARX's sample-based models, computed over the *released* records (suppressed
records carry no quasi-identifier value and are left out):

* prosecutor: a record's risk is 1/|class|; max = 1/smallest class, average = #classes /
  #records, plus the share of records whose risk exceeds the threshold;
* journalist: needs a population table; without one the sample is taken as the
  population, so it equals the prosecutor risk (stated in the report);
* marketer: expected share of records re-identified = #classes / #records;
* sample uniques: share of records alone in their class.

The same figures for the original data (every QI at level 0) are under ``risk.input``.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from privacy.kanon.anonymize import Prepared
    from privacy.kanon.lattice import Classes
    from privacy.kanon.models import KAnonymity, LDiversity, TCloseness

_EDGES = (1, 2, 3, 4, 5, 10, 20, 50, 100, 1000)


def risk_summary(sizes: np.ndarray, threshold: float) -> dict[str, Any]:
    """Prosecutor/journalist/marketer risk and sample uniques for class ``sizes``."""
    sizes = np.asarray(sizes, dtype=np.int64)
    records = int(sizes.sum())
    if records == 0:
        empty = {"max": 0.0, "average": 0.0, "records_above_threshold": 0.0}
        return {"records": 0, "prosecutor": empty, "journalist": dict(empty),
                "marketer": {"average": 0.0}, "sample_uniques": 0.0}
    risk = 1.0 / sizes
    above = float(sizes[risk > threshold].sum()) / records
    pros = {
        "max": float(risk.max()),
        "average": len(sizes) / records,
        "records_above_threshold": above,
    }
    return {
        "records": records,
        "prosecutor": pros,
        "journalist": dict(pros),
        "marketer": {"average": len(sizes) / records},
        "sample_uniques": float(sizes[sizes == 1].sum()) / records,
    }


def class_histogram(sizes: np.ndarray) -> list[dict[str, Any]]:
    """Classes and records per class-size bucket (1, 2, 3, 4, 5-9, 10-19, ...)."""
    out = []
    bounds = [*_EDGES, None]
    for lo, hi in itertools.pairwise(bounds):
        sel = sizes >= lo if hi is None else (sizes >= lo) & (sizes < hi)
        if hi is None:
            label = f"{lo}+"
        elif hi - lo == 1:
            label = str(lo)
        else:
            label = f"{lo}-{hi - 1}"
        out.append({"size": label, "classes": int(sel.sum()), "records": int(sizes[sel].sum())})
    return out


def build_report(*, prep: Prepared, levels: tuple[int, ...], classes: Classes,
                 model: KAnonymity, metric: str, losses: dict[str, float], suppression: str,
                 risk_threshold: float, l_diversity: LDiversity | None,
                 t_closeness: TCloseness | None, search_stats: Any,
                 input_classes: np.ndarray) -> dict[str, Any]:
    """The REPORT.json contract (see ``privacy.kanon``)."""
    kept = classes.sizes[~classes.failing]
    rows = prep.table.num_rows
    suppressed = classes.suppressed
    risk = risk_summary(kept, risk_threshold)
    risk["threshold"] = risk_threshold
    risk["population_model"] = (
        "none: the sample is taken as the population, so journalist risk equals "
        "prosecutor risk"
    )
    risk["input"] = risk_summary(input_classes, risk_threshold)
    report: dict[str, Any] = {
        "achievable": True,
        "k": model.k,
        "suppression_limit": model.max_suppression,
        "metric": metric,
        "quasi_identifiers": list(prep.qis),
        "hierarchy_heights": {q: h.height for q, h in zip(prep.qis, prep.hierarchies,
                                                           strict=True)},
        "privacy_models": {
            "k_anonymity": {"k": model.k},
            "l_diversity": None if l_diversity is None else {
                "sensitive": l_diversity.sensitive, "l": l_diversity.l,
                "variant": l_diversity.variant, "c": l_diversity.c},
            "t_closeness": None if t_closeness is None else {
                "sensitive": t_closeness.sensitive, "t": t_closeness.t,
                "distance": "ordered" if prep.criteria.t_ordered else "equal"},
        },
        "generalization": {q: int(levels[j]) for j, q in enumerate(prep.qis)},
        "rows_in": rows,
        "rows_out": rows if suppression == "mask" else rows - suppressed,
        "suppression": suppression,
        "suppressed_records": suppressed,
        "suppressed_share": suppressed / rows,
        "information_loss": {k: float(v) for k, v in losses.items()},
        "risk": risk,
        "classes": {
            "count": len(kept),
            "min_size": int(kept.min()) if len(kept) else 0,
            "max_size": int(kept.max()) if len(kept) else 0,
            "mean_size": float(kept.mean()) if len(kept) else 0.0,
            "histogram": class_histogram(kept),
        },
    }
    if search_stats is not None:
        report["search"] = {
            "lattice_nodes": search_stats.nodes_total,
            "nodes_evaluated": search_stats.nodes_evaluated,
            "nodes_anonymous": search_stats.nodes_anonymous,
            "nodes_pruned": search_stats.nodes_pruned,
            "seconds": round(search_stats.seconds, 3),
        }
    return report
