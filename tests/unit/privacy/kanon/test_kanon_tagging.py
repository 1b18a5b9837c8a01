"""Predictive tagging is used only where anonymity is monotone, checked by brute force.

For random small tables, every node is evaluated directly and, for every node and each of its
direct generalizations, "anonymous within the suppression limit" must carry over upwards
whenever :func:`monotone_anonymity` says tagging is sound. For the models where it says no
(entropy / recursive l-diversity, t-closeness, with suppression), a counterexample must exist
among the random tables, so the guard is not needlessly strict either.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from privacy.kanon import Hierarchy, KAnonymity, LDiversity, TCloseness
from privacy.kanon.anonymize import prepare
from privacy.kanon.lattice import Criteria, lattice_nodes, monotone_anonymity, node_classes


def _table(rng: np.random.Generator, n: int):
    hs = {
        "a": Hierarchy((("a0", "A", "*"), ("a1", "A", "*"), ("a2", "B", "*"), ("a3", "B", "*"))),
        "b": Hierarchy((("b0", "*"), ("b1", "*"), ("b2", "*"))),
    }
    table = pd.DataFrame({
        "a": rng.choice(["a0", "a1", "a2", "a3"], n),
        "b": rng.choice(["b0", "b1", "b2"], n),
        "s": rng.integers(0, 4, n),
    })
    return table, hs


MODELS = {
    "k": dict,
    "distinct": lambda: {"l_diversity": LDiversity("s", 2, "distinct")},
    "entropy": lambda: {"l_diversity": LDiversity("s", 1.8, "entropy")},
    "recursive": lambda: {"l_diversity": LDiversity("s", 2, "recursive", 1.5)},
    "t-equal": lambda: {"t_closeness": TCloseness("s", 0.25, "equal")},
    "t-ordered": lambda: {"t_closeness": TCloseness("s", 0.2, "ordered")},
}


def _violations(model: str, supp: float, trials: int = 60) -> tuple[int, bool]:
    rng = np.random.default_rng(11)
    found = 0
    monotone = None
    for _ in range(trials):
        table, hs = _table(rng, int(rng.integers(6, 30)))
        prep = prepare(table, hs, KAnonymity(2, ("a", "b"), supp), **MODELS[model]())
        monotone = monotone_anonymity(prep.criteria)
        p = prep.problem
        nodes = [tuple(int(x) for x in n) for n in lattice_nodes([int(h) for h in p.heights])]
        anon = {n: node_classes(p, n, prep.criteria).suppressed <= prep.criteria.max_outliers
                for n in nodes}
        for n in nodes:
            for j in range(p.dims):
                up = tuple(v + (i == j) for i, v in enumerate(n))
                if up in anon and anon[n] and not anon[up]:
                    found += 1
    return found, bool(monotone)


@pytest.mark.parametrize("model", list(MODELS))
@pytest.mark.parametrize("supp", [0.0, 0.3])
def test_tagging_only_where_anonymity_is_monotone(model, supp):
    found, monotone = _violations(model, supp)
    if monotone:
        assert found == 0, f"{model} at suppression {supp}: monotonicity violated {found} times"


@pytest.mark.parametrize("model", ["entropy", "recursive", "t-equal"])
def test_guard_is_needed_for_non_monotone_models(model):
    found, monotone = _violations(model, 0.3, trials=200)
    assert not monotone
    assert found > 0, f"no counterexample for {model} with suppression: guard may be too strict"


def test_monotone_anonymity_table():
    base = {"k": 2, "max_outliers": 3}
    assert monotone_anonymity(Criteria(**base))
    assert monotone_anonymity(Criteria(**base, l=2, l_variant="distinct"))
    for extra in ({"l": 2, "l_variant": "entropy"}, {"l": 2, "l_variant": "recursive", "c": 2},
                  {"t": 0.2}):
        assert not monotone_anonymity(Criteria(**base, **extra))
        assert monotone_anonymity(Criteria(k=2, max_outliers=0, **extra))
