"""A granularity ladder: choose the finest level of a DP count table whose error fits.

The release policy may give a dataset a ladder of levels, finest first, and a target median
relative error per cell (``granularity`` / ``target_relative_error`` in privacy/policy.yaml).
Before a release, :func:`choose_level` predicts each level's median relative error from
public information only and picks the finest level that meets the target:

* the noise: the count mechanism's scale from the per-cell epsilon and the contribution bound
  (two-sided geometric noise, exact median of |noise|; discrete Gaussian when delta > 0);
* the number of public cells of each level (its public key set);
* the expected total: the mean of the earlier published noisy totals of the same dataset
  (the unbiased, unfloored sums of its last releases), when there are some.

It never reads this period's raw counts: the same public inputs give the same choice, whatever
the data (tests/unit/privacy/test_granularity.py changes the raw counts and checks that).

Prediction per level: expected count per cell mu = total / cells (an even spread; a skewed
table has a larger error in its many small cells, so the prediction is optimistic there),
relative error = median|noise| / max(mu, 1). The zero floor of published counts only lowers
|error| (for a true count >= 0), so the prediction bounds the floored values' error too.
Without any earlier release there is no public volume: the COARSEST level is used
(conservative) and the statement says so.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from opencity.errors import ConfigError

__all__ = ["LadderChoice", "LevelPrediction", "choose_level", "noise_median_abs"]

#: How many earlier releases the expected total averages over (the most recent ones).
HISTORY_WINDOW = 8


def noise_median_abs(epsilon: float, sensitivity: float, delta: float = 0.0) -> float:
    """Median of |noise| of the count mechanism (privacy.dp.mechanisms.count_noise) at
    ``epsilon`` per cell and ``sensitivity`` (rows of one unit in one cell)."""
    if not (math.isfinite(epsilon) and epsilon > 0 and sensitivity > 0):
        raise ConfigError(f"noise scale needs epsilon > 0 and sensitivity > 0, got "
                          f"{epsilon!r}, {sensitivity!r}")
    if delta == 0:
        alpha = math.exp(-epsilon / sensitivity)
        # P(|Z| > k) = 2 alpha^(k+1) / (1 + alpha); the median is the first k with <= 1/2.
        k = math.log((1 + alpha) / 4) / math.log(alpha) - 1
        return float(max(0, math.ceil(k - 1e-12)))
    from privacy.dp.mechanisms import discrete_gaussian_sigma

    return 0.6745 * discrete_gaussian_sigma(epsilon, delta, int(sensitivity))


@dataclass(frozen=True)
class LevelPrediction:
    """The predicted error of one level (public information only)."""

    level: str
    cells: int
    expected_cell_count: float | None
    noise_median_abs: float
    predicted_median_relative_error: float | None
    meets_target: bool


@dataclass(frozen=True)
class LadderChoice:
    """The chosen level and the predictions behind it (goes into the statement and the
    release report)."""

    level: str
    index: int
    target_relative_error: float
    basis: str
    history_releases: int
    expected_total: float | None
    predictions: tuple[LevelPrediction, ...]

    @property
    def met(self) -> bool:
        return self.predictions[self.index].meets_target

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ladder"] = [p.level for p in self.predictions]
        d["predictions"] = [
            {**asdict(p),
             "predicted_median_relative_error": (
                 None if p.predicted_median_relative_error is None
                 else round(p.predicted_median_relative_error, 4)),
             "expected_cell_count": (None if p.expected_cell_count is None
                                     else round(p.expected_cell_count, 4))}
            for p in self.predictions]
        d["target_met"] = self.met
        return d


def choose_level(levels: Sequence[tuple[str, int]], *, target: float, epsilon_per_cell: float,
                 sensitivity: float, history_totals: Sequence[float] = (),
                 delta_per_cell: float = 0.0) -> LadderChoice:
    """The finest level (``levels`` finest first, each ``(name, public cells)``) whose
    predicted median relative error is <= ``target``; the coarsest when none is, or when
    ``history_totals`` (earlier published noisy totals of the dataset, oldest first) is empty.
    """
    if not levels:
        raise ConfigError("a granularity ladder needs at least one level")
    if not (math.isfinite(target) and target > 0):
        raise ConfigError(f"target_relative_error must be > 0, got {target!r}")
    noise = noise_median_abs(epsilon_per_cell, sensitivity, delta_per_cell)
    recent = [max(float(t), 0.0) for t in list(history_totals)[-HISTORY_WINDOW:]
              if t is not None and math.isfinite(float(t))]
    total = sum(recent) / len(recent) if recent else None
    preds = []
    for name, cells in levels:
        if cells < 1:
            raise ConfigError(f"granularity level {name!r} has no public cells")
        if total is None:
            preds.append(LevelPrediction(name, cells, None, noise, None, False))
            continue
        mu = total / cells
        rel = noise / max(mu, 1.0)
        preds.append(LevelPrediction(name, cells, mu, noise, rel, rel <= target))
    if total is None:
        index = len(preds) - 1
        basis = ("no earlier release of this dataset: no public volume to predict from, so "
                 "the coarsest level")
    else:
        index = next((i for i, p in enumerate(preds) if p.meets_target), len(preds) - 1)
        basis = (f"expected total {total:.1f} = mean of the last {len(recent)} published "
                 "noisy totals (unfloored) of this dataset; noise median from epsilon and "
                 "the contribution bound; cells from the public key sets")
        if not preds[index].meets_target:
            basis += "; no level meets the target, so the coarsest"
    return LadderChoice(level=preds[index].level, index=index, target_relative_error=target,
                        basis=basis, history_releases=len(recent), expected_total=total,
                        predictions=tuple(preds))
