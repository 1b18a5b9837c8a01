"""Empirical privacy audit of the DP engine on neighbouring datasets.

D holds background data only; D' adds, in every replica, one worst-case privacy unit that
puts L-inf + 1 rows into each of L0 + 1 keys (just over both contribution bounds). Each
replica has its own public keys, so ONE release of D and one of D' give R independent trials
of the mechanism (keys get independent noise). For an event E on the released values of a
replica's keys (the sum of its keys above a threshold tau, and the lower tail), the
privacy loss is at least ln(P[E | D'] / P[E | D]); a Clopper-Pearson interval (Bonferroni over
all events, at the per-assertion alpha of tests/stat_budget.py) turns the observed frequencies into an epsilon lower bound that a
correct engine keeps below its claim. A negative control under-declares the sensitivity (the
noise of L-inf = 1 for L-inf = 2 rows) and the audit must then report a lower bound above the
claim.

``R_FAST`` replicas run in every CI run; ``R_SLOW`` under the ``slow`` marker. The noise is
seeded in the default run (D and D' get different seeds) and drawn from the production sampler
under ``--unseeded``.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from stat_budget import epsilon_lower_bound

from privacy.dp import ContributionBounds, DPBudget, dp_count, dp_count_distinct, engine
from privacy.dp.mechanisms import count_noise

R_FAST = 20_000
R_SLOW = 200_000


def _neighbours(r: int, l0: int, linf: int) -> tuple[pa.Table, pa.Table, pa.Table]:
    keys = [f"r{i:06d}_{j}" for i in range(r) for j in range(l0 + 1)]
    public = pa.table({"key": keys + ["bg"]})
    background = pa.table({"unit": ["bg0", "bg1"], "key": ["bg", "bg"]})
    units = np.repeat([f"w{i:06d}" for i in range(r)], (l0 + 1) * (linf + 1))
    worst_keys = np.repeat(np.array(keys, dtype=object), linf + 1)
    worst = pa.table({"unit": pa.array(units), "key": pa.array(worst_keys.tolist())})
    return background, pa.concat_tables([background, worst]), public


def _replica_sums(out: pa.Table, r: int, l0: int) -> np.ndarray:
    out = out.filter(pa.compute.not_equal(out.column("key"), "bg")).sort_by("key")
    values = out.column("value").to_numpy().astype(np.int64)
    return values.reshape(r, l0 + 1).sum(axis=1)


def _audit(release, r: int, l0: int, linf: int, eps: float, random_state=None) -> float:
    d, d1, public = _neighbours(r, l0, linf)
    bounds = ContributionBounds(max_partitions=l0, max_rows_per_partition=linf)
    kw = {"unit": "unit", "by": ["key"], "budget": DPBudget(eps), "bounds": bounds,
          "public_keys": public}
    # independent noise for D and D': two seeds, or the CSPRNG twice
    rs_d1 = None if random_state is None else random_state + 1
    s_d = _replica_sums(release(d, **kw, random_state=random_state), r, l0)
    s_d1 = _replica_sums(release(d1, **kw, random_state=rs_d1), r, l0)
    return epsilon_lower_bound(s_d, s_d1)


CASES = [
    ("count", dp_count, 1, 1),
    ("count", dp_count, 2, 2),
    ("count_distinct", dp_count_distinct, 1, 1),
]


def _check(name, release, l0, linf, r, capsys, random_state):
    eps = 1.0
    lb = _audit(release, r, l0, linf, eps, random_state)
    with capsys.disabled():
        print(f"\naudit {name} L0={l0} Linf={linf} R={r}: epsilon lower bound {lb:.3f} "
              f"(claim {eps})")
    assert lb <= eps, f"{name}: empirical epsilon lower bound {lb:.3f} exceeds the claim {eps}"


@pytest.mark.statistical(assertions=1)
@pytest.mark.parametrize(("name", "release", "l0", "linf"), CASES)
def test_audit_epsilon_lower_bound_within_claim(name, release, l0, linf, capsys,
                                                noise_random_state):
    _check(name, release, l0, linf, R_FAST, capsys, noise_random_state)


@pytest.mark.slow
@pytest.mark.statistical(assertions=1)
@pytest.mark.parametrize(("name", "release", "l0", "linf"), CASES)
def test_audit_epsilon_lower_bound_within_claim_many_trials(name, release, l0, linf, capsys,
                                                           noise_random_state):
    _check(name, release, l0, linf, R_SLOW, capsys, noise_random_state)


def test_negative_control_under_declared_sensitivity_is_caught(monkeypatch, capsys,
                                                               noise_random_state):
    """Noise for L-inf = 1 while units keep 2 rows per key: the audit must see eps > claim."""
    real = engine._noises

    def under_declared(statistic, budget, bounds, rs):
        if statistic == "count":
            l0 = bounds.max_partitions
            return {"count": count_noise(budget.epsilon / l0, 0.0, 1, rs)}
        return real(statistic, budget, bounds, rs)

    monkeypatch.setattr(engine, "_noises", under_declared)
    eps = 1.0
    lb = _audit(dp_count, R_FAST, 1, 2, eps, noise_random_state)
    with capsys.disabled():
        print(f"\naudit negative control (sensitivity 1 declared for L-inf 2): "
              f"epsilon lower bound {lb:.3f} (claim {eps})")
    assert lb > eps


def test_negative_control_unbounded_l0_is_caught(monkeypatch, capsys, noise_random_state):
    """Bounding that lets a unit keep L0 + 1 keys (no L0 cut) must be caught."""
    real = engine.bounded_aggregate

    def loose(data, *, bounds, **kw):
        loose_bounds = ContributionBounds(max_partitions=bounds.max_partitions + 1,
                                          max_rows_per_partition=bounds.max_rows_per_partition,
                                          lower=bounds.lower, upper=bounds.upper)
        return real(data, bounds=loose_bounds, **kw)

    monkeypatch.setattr(engine, "bounded_aggregate", loose)
    eps = 1.0
    lb = _audit(dp_count, R_FAST, 1, 1, eps, noise_random_state)
    with capsys.disabled():
        print(f"\naudit negative control (L0 not enforced): epsilon lower bound {lb:.3f} "
              f"(claim {eps})")
    assert lb > eps
