import math

import pytest

from opencity.errors import ConfigError
from privacy.dp import ContributionBounds, DPBudget, PartitionSelection
from privacy.policy import UnitBudget

BAD_EPSILONS = [0, 0.0, -1.0, math.nan, math.inf, -math.inf, "1", None, True]


@pytest.mark.parametrize("eps", BAD_EPSILONS)
def test_budget_rejects_bad_epsilon(eps):
    with pytest.raises(ConfigError, match="epsilon"):
        DPBudget(eps)


@pytest.mark.parametrize("delta", [-1e-9, 1.0, 2.0, math.nan, math.inf, "0"])
def test_budget_rejects_bad_delta(delta):
    with pytest.raises(ConfigError, match="delta"):
        DPBudget(1.0, delta)


def test_budget_accepts_edges_and_is_frozen():
    b = DPBudget(1e-6, 0.0)
    assert b.epsilon == 1e-6
    with pytest.raises(AttributeError):
        b.epsilon = 2.0  # type: ignore[misc]
    assert DPBudget(2.0, 1e-6).scaled(0.5) == DPBudget(1.0, 5e-7)


@pytest.mark.parametrize("n,delta,ok", [(1000, 1e-4, True), (1000, 1e-3, False),
                                        (1000, 0.0, False), (10, 0.05, True)])
def test_delta_below_one_over_n(n, delta, ok):
    b = DPBudget(1.0, delta)
    if ok:
        b.check_delta_for_units(n)
    else:
        with pytest.raises(ConfigError, match="1/n"):
            b.check_delta_for_units(n)


@pytest.mark.parametrize(
    "kw",
    [
        {"max_partitions": 0},
        {"max_partitions": 1.5},
        {"max_partitions": True},
        {"max_rows_per_partition": -1},
        {"lower": math.nan},
        {"upper": math.inf},
        {"lower": 2.0, "upper": 1.0},
    ],
)
def test_bounds_reject(kw):
    with pytest.raises(ConfigError):
        ContributionBounds(**kw)


@pytest.mark.parametrize("share", [0, 1, -0.1, 1.5, math.nan])
def test_partition_selection_share(share):
    with pytest.raises(ConfigError):
        PartitionSelection(share)


@pytest.mark.parametrize("kw", [{"epsilon": 0}, {"epsilon": math.inf}, {"epsilon": 1, "delta": 1},
                                {"epsilon": 1, "period": "fortnight"},
                                {"epsilon": 1, "name": "pet"}, {"epsilon": -1},
                                {"epsilon": math.nan}, {"epsilon": "1"}])
def test_unit_cap_rejects(kw):
    """The per-unit cap (now the policy's UnitBudget) is validated like DPBudget."""
    args = {"name": "subscriber", "period": "month"} | kw
    with pytest.raises(ConfigError):
        UnitBudget(**args)
