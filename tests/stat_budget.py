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
