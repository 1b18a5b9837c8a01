"""The statistical tests' shared error budget (issue 19: a fast, deterministic loop).

Every assertion whose outcome depends on random draws is a hypothesis test that fails
without a bug with some probability. Two runs keep that probability known:

* the default run (``pytest``, ``scripts/test-fast``) draws from SEEDED samplers (the
  ``noise_random_state`` fixture gives a fixed seed per test), so it is deterministic: a
  failure reproduces and means the code or the test changed;
* the unseeded stage (``pytest -m statistical --unseeded``, the last step of
  ``scripts/test``) draws from the production samplers (OpenDP's CSPRNG, ``random_state=None``).
  Its assertions share ONE suite-wide false-alarm probability ``SUITE_ALPHA`` by Bonferroni:
  each of at most ``ASSERTION_BUDGET`` assertions is tested at ``ALPHA = SUITE_ALPHA /
  ASSERTION_BUDGET``. Tests declare how many such assertions they make with
  ``@pytest.mark.statistical(assertions=N)``; the collection fails when the declared total of
  an unseeded run exceeds the budget (tests/conftest.py), so a new statistical test cannot
  silently raise the stage's failure probability.

So a clean run of the unseeded stage fails with probability at most 1e-4 when the code is
correct, and each test's sample size is chosen for power >= 0.99 against its alternative at
that ``ALPHA`` (the tests check their own power).
"""

from __future__ import annotations

from scipy import stats

SUITE_ALPHA = 1e-4
ASSERTION_BUDGET = 32
ALPHA = SUITE_ALPHA / ASSERTION_BUDGET  # 3.1e-6 per assertion
Z_CRIT = float(stats.norm.isf(ALPHA / 2))  # two-sided critical value, 4.66


def stable_seed(nodeid: str) -> int:
    """A fixed seed per test (its node id), the same on every machine and run."""
    import hashlib

    return int.from_bytes(hashlib.sha256(nodeid.encode()).digest()[:4], "big")


def clopper_pearson(k: int, n: int, alpha: float) -> tuple[float, float]:
    """Exact two-sided (1 - alpha) interval of a binomial proportion k / n."""
    lo = 0.0 if k == 0 else float(stats.beta.ppf(alpha / 2, k, n - k + 1))
    hi = 1.0 if k == n else float(stats.beta.ppf(1 - alpha / 2, k + 1, n - k))
    return lo, hi


def epsilon_lower_bound(s_d, s_d1, taus: tuple[int, ...] = (1, 2, 3, 4, 5),
                        alpha: float = ALPHA) -> float:
    """An empirical privacy audit's certified epsilon lower bound: the largest
    Clopper-Pearson-certified ln(P[E|D'] / P[E|D]) over the events "replica sum >= tau"
    (favouring D') and "< tau" (favouring D), Bonferroni over the events at ``alpha``."""
    import math

    n = len(s_d)
    events = [(lambda s, t=t: s >= t) for t in taus] + [(lambda s, t=t: s < t) for t in taus]
    a = alpha / len(events)
    best = 0.0
    for i, event in enumerate(events):
        k0, k1 = int(event(s_d).sum()), int(event(s_d1).sum())
        num, den = (k1, k0) if i < len(taus) else (k0, k1)
        lo, _ = clopper_pearson(num, n, a)
        _, hi = clopper_pearson(den, n, a)
        if lo > 0 and hi > 0:
            best = max(best, math.log(lo / hi))
    return best
