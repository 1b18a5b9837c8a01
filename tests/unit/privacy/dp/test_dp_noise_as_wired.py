"""Two-sided statistical tests of every DP statistic as wired through the engine.

The expected noise distribution of each released value is derived here BY HAND from the
budget (epsilon, delta) and the declared contribution bounds (L0 keys, L-inf rows, value
clamp), never read from a mechanism object:

* count:           discrete Laplace, alpha = exp(-(eps / L0) / L-inf)
* distinct count:  discrete Laplace, alpha = exp(-(eps / L0) / 1)
* sum (delta = 0): Laplace of scale b = L-inf * max|bound| / (eps / L0), snapped to the grid
                   Lambda = sensitivity * 2^ceil(log2(L0 / eps)) (Mironov's snapping)
* count, delta > 0: discrete Gaussian whose sigma solves the CKS20 privacy curve for
                   (eps / L0, delta / L0) and sensitivity L-inf (solved here with scipy)
* mean:            (sum + N_s) / (count + N_c), each at eps / 2; delta-method variance
* selection:       a key with n units is released with probability P(n + Z >= t), Z discrete
                   Laplace at eps / L0 and t the smallest threshold with P(1 + Z >= t) <= delta/L0

Each test releases many public keys with known true values in ONE engine call (keys are
independent draws) and compares the sample variance of (released - true) with the hand
variance: z = (s^2 - var) / sqrt((mu4 - var^2) / N), rejected when |z| > Z_CRIT (two-sided, at
the per-assertion alpha of tests/stat_budget.py). The number of keys N is chosen so that a 1.5x
too small or too large noise scale is rejected with power >= 0.99 (computed in ``_power``,
checked by ``test_power_*``), and ``test_wrong_scale_is_rejected`` runs the same test on draws
with the scale off by 1.5x in each direction. Draws come from the seeded samplers in the default
run and from the production samplers (OpenDP, no seed) under ``--unseeded``.
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest
from scipy import optimize, stats
from stat_budget import ALPHA, Z_CRIT

from privacy.dp import (
    ContributionBounds,
    DPBudget,
    PartitionSelection,
    dp_count,
    dp_count_distinct,
    dp_mean,
    dp_sum,
)

N_KEYS = 2000


# ----------------------------------------------------------------- hand-derived laws
def dlap_pmf(alpha: float, support: int) -> tuple[np.ndarray, np.ndarray]:
    z = np.arange(-support, support + 1)
    return z, (1 - alpha) / (1 + alpha) * alpha ** np.abs(z)


def moments(z: np.ndarray, p: np.ndarray) -> tuple[float, float]:
    """Variance and fourth central moment of a (mean-zero, symmetric) pmf."""
    p = p / p.sum()
    mean = float(np.sum(z * p))
    var = float(np.sum((z - mean) ** 2 * p))
    mu4 = float(np.sum((z - mean) ** 4 * p))
    return var, mu4


def dlap_moments(alpha: float) -> tuple[float, float]:
    support = int(60 / -math.log(alpha)) + 10
    return moments(*dlap_pmf(alpha, support))


def snapping_scale_and_grid(eps: float, sens: float) -> tuple[float, float]:
    """Mironov's Snapping (Mir12, section 5.2) as diffprivlib defines it: the noise uses the
    effective epsilon (eps - 2 eta) / (1 + 12 B eta), eta = 2**-53 and B the public clamp in
    units of the sensitivity, and the output is rounded to the smallest power of two >= 1 /
    effective epsilon (times the sensitivity). At eps = 4 that grid is 0.5, not 0.25: 1/eps
    sits exactly on a power of two and the effective epsilon is a hair below it."""
    from privacy.dp.mechanisms import SNAP_BOUND

    eta = 2.0**-53
    eff = (eps - 2 * eta) / (1 + 12 * SNAP_BOUND * eta)
    return sens / eff, sens * 2.0 ** math.ceil(math.log2(1 / eff))


def snapped_laplace_moments(b: float, grid: float) -> tuple[float, float]:
    """Laplace(b) rounded to the nearest multiple of ``grid`` (true value on the grid)."""
    k = np.arange(-int(60 * b / grid) - 5, int(60 * b / grid) + 6)
    lap = stats.laplace(scale=b)
    p = lap.cdf((k + 0.5) * grid) - lap.cdf((k - 0.5) * grid)
    return moments(k * grid, p)


def cks_sigma(eps: float, delta: float, sens: int) -> float:
    """sigma with delta(eps) = delta for the discrete Gaussian (CKS20, Theorem 7)."""

    def delta_of(sigma: float) -> float:
        z = np.arange(-int(40 * sigma) - 50, int(40 * sigma) + 51)
        w = np.exp(-(z.astype(float) ** 2) / (2 * sigma**2))
        p = w / w.sum()
        a = eps * sigma**2 / sens - sens / 2
        b = eps * sigma**2 / sens + sens / 2
        return float(p[z > a].sum() - math.exp(eps) * p[z > b].sum()) - delta

    return optimize.brentq(delta_of, 0.05, 500.0, xtol=1e-10)


def dgauss_moments(sigma: float) -> tuple[float, float]:
    z = np.arange(-int(40 * sigma) - 50, int(40 * sigma) + 51)
    return moments(z, np.exp(-(z.astype(float) ** 2) / (2 * sigma**2)))


# ----------------------------------------------------------------- the test itself
def variance_z(noise: np.ndarray, var: float, mu4: float) -> float:
    n = len(noise)
    s2 = float(np.mean((noise - 0.0) ** 2))  # the noise is mean-zero by construction
    return (s2 - var) / math.sqrt((mu4 - var**2) / n)


def assert_noise_law(noise: np.ndarray, var: float, mu4: float) -> None:
    z = variance_z(noise, var, mu4)
    assert abs(z) <= Z_CRIT, (
        f"noise variance {np.mean(noise**2):.4g} differs from the hand-derived {var:.4g} "
        f"(z = {z:.2f}, |z| > {Z_CRIT:.2f} at alpha = {ALPHA:.2g})"
    )


def _power(var: float, mu4: float, factor: float, n: int) -> float:
    """Power of the variance test when the noise scale is ``factor`` times the claim.

    Scaling the noise by f scales its variance by f^2 and mu4 by f^4 (normal approximation
    of the sample second moment).
    """
    v1, m1 = var * factor**2, mu4 * factor**4
    se0 = math.sqrt((mu4 - var**2) / n)
    se1 = math.sqrt((m1 - v1**2) / n)
    hi, lo = var + Z_CRIT * se0, var - Z_CRIT * se0
    return float(stats.norm.sf((hi - v1) / se1) + stats.norm.cdf((lo - v1) / se1))


def _power_ok(var: float, mu4: float, n: int) -> None:
    for factor in (1 / 1.5, 1.5):
        assert _power(var, mu4, factor, n) >= 0.99, f"N={n} too small for factor {factor}"


# ----------------------------------------------------------------- data
def _events(n_keys: int, units_per_key: int, rows_per_unit: int, value: float = 1.0):
    """Each unit puts ``rows_per_unit`` rows in one key (within every bound)."""
    keys = np.repeat(np.arange(n_keys), units_per_key * rows_per_unit)
    units = np.repeat(np.arange(n_keys * units_per_key), rows_per_unit)
    table = pa.table({
        "unit": pa.array([f"u{u}" for u in units]),
        "key": pa.array([f"k{k:05d}" for k in keys]),
        "v": pa.array(np.full(len(keys), value)),
    })
    public = pa.table({"key": [f"k{k:05d}" for k in range(n_keys)]})
    return table, public


def _values(out: pa.Table) -> np.ndarray:
    return out.column("value").to_numpy().astype(np.float64)


# ----------------------------------------------------------------- tests per statistic
@pytest.mark.statistical(assertions=1)
def test_count_noise_matches_hand_law(noise_random_state):
    eps, l0, linf, upk = 1.0, 2, 3, 40
    data, public = _events(N_KEYS, upk, linf)
    out = dp_count(data, unit="unit", by=["key"], budget=DPBudget(eps),
                   bounds=ContributionBounds(max_partitions=l0, max_rows_per_partition=linf),
                   public_keys=public, random_state=noise_random_state)
    var, mu4 = dlap_moments(math.exp(-(eps / l0) / linf))
    _power_ok(var, mu4, N_KEYS)
    assert_noise_law(_values(out) - upk * linf, var, mu4)


@pytest.mark.statistical(assertions=1)
def test_count_distinct_noise_matches_hand_law(noise_random_state):
    eps, l0, upk = 1.0, 3, 40
    data, public = _events(N_KEYS, upk, 2)
    out = dp_count_distinct(data, unit="unit", by=["key"], budget=DPBudget(eps),
                            bounds=ContributionBounds(max_partitions=l0,
                                                      max_rows_per_partition=5),
                            public_keys=public, random_state=noise_random_state)
    var, mu4 = dlap_moments(math.exp(-(eps / l0)))
    _power_ok(var, mu4, N_KEYS)
    assert_noise_law(_values(out) - upk, var, mu4)


@pytest.mark.statistical(assertions=1)
def test_count_with_delta_is_discrete_gaussian_of_hand_sigma(noise_random_state):
    eps, delta, l0, linf, upk = 1.0, 1e-6, 2, 2, 60
    data, public = _events(N_KEYS, upk, linf)
    out = dp_count(data, unit="unit", by=["key"], budget=DPBudget(eps, delta),
                   bounds=ContributionBounds(max_partitions=l0, max_rows_per_partition=linf),
                   public_keys=public, random_state=noise_random_state)
    var, mu4 = dgauss_moments(cks_sigma(eps / l0, delta / l0, linf))
    _power_ok(var, mu4, N_KEYS)
    assert_noise_law(_values(out) - upk * linf, var, mu4)


@pytest.mark.statistical(assertions=1)
def test_sum_noise_is_snapped_laplace_of_hand_scale(noise_random_state):
    eps, l0, linf, upper = 0.8, 2, 2, 8.0  # eps / L0 = 0.4: 1/eps_key = 2.5, grid 4 * sens
    sens = linf * upper
    b, grid = snapping_scale_and_grid(eps / l0, sens)
    upk = 4  # true sum per key = 4 units * 2 rows * 8 = 64 = one grid step (on the grid)
    data, public = _events(N_KEYS, upk, linf, value=upper)
    out = dp_sum(data, unit="unit", by=["key"], value="v", budget=DPBudget(eps),
                 bounds=ContributionBounds(max_partitions=l0, max_rows_per_partition=linf,
                                           lower=-upper, upper=upper),
                 public_keys=public, random_state=noise_random_state)
    var, mu4 = snapped_laplace_moments(b, grid)
    _power_ok(var, mu4, N_KEYS)
    true = upk * linf * upper
    assert np.allclose(np.round((_values(out) - true) / grid) * grid, _values(out) - true)
    assert_noise_law(_values(out) - true, var, mu4)


@pytest.mark.statistical(assertions=1)
def test_mean_noise_matches_delta_method_of_hand_scales(noise_random_state):
    eps, l0, linf, upper, upk = 8.0, 1, 2, 8.0, 100
    value = 4.0
    data, public = _events(N_KEYS, upk, linf, value=value)
    out = dp_mean(data, unit="unit", by=["key"], value="v", budget=DPBudget(eps),
                  bounds=ContributionBounds(max_partitions=l0, max_rows_per_partition=linf,
                                            lower=0.0, upper=upper),
                  public_keys=public, random_state=noise_random_state)
    n = upk * linf
    eps_half = eps / 2 / l0
    sens_sum = linf * upper
    b, grid = snapping_scale_and_grid(eps_half, sens_sum)
    var_s, mu4_s = snapped_laplace_moments(b, grid)
    var_c, mu4_c = dlap_moments(math.exp(-eps_half / linf))
    # mean - value ~ (N_s - value * N_c) / n (first order); cumulants add
    var = (var_s + value**2 * var_c) / n**2
    k4 = ((mu4_s - 3 * var_s**2) + value**4 * (mu4_c - 3 * var_c**2)) / n**4
    mu4 = k4 + 3 * var**2
    _power_ok(var, mu4, N_KEYS)
    assert_noise_law(_values(out) - value, var, mu4)


def _hand_threshold(eps_key: float, delta_key: float) -> int:
    alpha = math.exp(-eps_key)
    # P(1 + Z >= t) = alpha^(t-1) / (1 + alpha) <= delta_key, smallest such t
    t = 1
    while alpha ** (t - 1) / (1 + alpha) > delta_key:
        t += 1
    return t


def _p_release(n: int, t: int, alpha: float) -> float:
    k = t - n  # need Z >= k
    if k <= 0:
        return 1 - alpha ** (1 - k) / (1 + alpha)
    return alpha**k / (1 + alpha)


@pytest.mark.statistical(assertions=3)
def test_partition_selection_release_rates_match_hand_threshold(
        noise_random_state):
    eps, delta, l0 = 1.0, 1e-6, 2
    eps_key, delta_key = eps / l0, delta / l0
    t = _hand_threshold(eps_key, delta_key)
    alpha = math.exp(-eps_key)
    per_n = 2500
    ns = (t - 3, t, t + 3)
    units, keys = [], []
    uid = 0
    for n in ns:
        for j in range(per_n):
            for _ in range(n):
                units.append(f"u{uid}")
                keys.append(f"n{n}_{j}")
                uid += 1
    data = pa.table({"unit": units, "key": keys})
    out = dp_count_distinct(data, unit="unit", by=["key"], budget=DPBudget(eps, delta),
                            bounds=ContributionBounds(max_partitions=l0),
                            partition_selection=PartitionSelection(),
                            random_state=noise_random_state)
    released = out.column("key").to_pylist()
    for n in ns:
        got = sum(1 for k in released if k.startswith(f"n{n}_"))
        p = _p_release(n, t, alpha)
        pval = stats.binomtest(got, per_n, p).pvalue
        assert pval > ALPHA, f"n={n}: {got}/{per_n} released, hand probability {p:.4f}"
        # a threshold one off (either way) would have been detected at this sample size
        for wrong in (t - 1, t + 1):
            q = _p_release(n, wrong, alpha)
            lo, hi = stats.binom.ppf([ALPHA / 2, 1 - ALPHA / 2], per_n, p)
            assert stats.binom.cdf(lo - 1, per_n, q) + stats.binom.sf(hi, per_n, q) >= 0.99 \
                or n == t + 3  # far above the threshold every key passes either way


def test_selection_threshold_is_accepted_by_opendp_privacy_map():
    """OpenDP's own accounting of the same threshold mechanism stays within (eps, delta)."""
    from privacy.dp.mechanisms import opendp_threshold_privacy, selection_threshold

    for eps, delta, l0 in [(1.0, 1e-6, 1), (0.5, 1e-5, 2), (0.1, 1e-8, 3)]:
        t = selection_threshold(eps / l0, delta / l0)
        assert t == _hand_threshold(eps / l0, delta / l0)
        got_eps, got_delta = opendp_threshold_privacy(eps / l0, t, l0)
        assert got_eps <= eps * (1 + 1e-9)
        assert got_delta <= delta


# ----------------------------------------------------------------- the test can fail
@pytest.mark.parametrize("factor", [1 / 1.5, 1.5])
def test_wrong_scale_is_rejected(factor):
    """Draws with the scale 1.5x too small or too large fail the same variance test."""
    rng = np.random.default_rng(2026)
    eps, l0, linf = 1.0, 2, 3
    alpha = math.exp(-(eps / l0) / linf)
    var, mu4 = dlap_moments(alpha)
    wrong_alpha = math.exp(-(eps / l0) / (linf * factor))
    p = 1 - wrong_alpha
    draws = rng.geometric(p, N_KEYS) - rng.geometric(p, N_KEYS)
    with pytest.raises(AssertionError, match="differs from the hand-derived"):
        assert_noise_law(draws.astype(float), var, mu4)


def test_power_of_the_variance_test():
    var, mu4 = dlap_moments(math.exp(-(1.0 / 2) / 3))
    assert _power(var, mu4, 1.5, N_KEYS) >= 0.99
    assert _power(var, mu4, 1 / 1.5, N_KEYS) >= 0.99
    assert _power(var, mu4, 1.0, N_KEYS) == pytest.approx(ALPHA, rel=0.05)
