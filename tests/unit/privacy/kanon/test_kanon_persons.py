"""Person-level k-anonymity (privacy.kanon with a unit column) and the per-person cap.

The checks recount the release from the input rows with plain pandas (the engine's
suppressed_mask maps released rows back to their persons): every class has k distinct
persons and l distinct sensitive values without any one person.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from opencity.errors import ConfigError, DataQualityError, NotAchievableError
from privacy.kanon import Hierarchy, KAnonymity, LDiversity, anonymize
from privacy.kanon.persons import cap_per_unit

AGE = Hierarchy.intervals(0, 120, (5, 10, 20))
SEX = Hierarchy.flat(["F", "M"])


def _recount(table: pa.Table, result, qis, unit, sensitive):
    """Per released class: records, distinct persons, distinct values without the worst
    person, largest share of one person (plain pandas, from the input rows)."""
    kept = table.filter(pa.array(~result.suppressed_mask)).to_pandas()
    out = result.table.to_pandas()
    assert len(kept) == len(out)
    df = pd.DataFrame({q: out[q].to_numpy() for q in qis})
    df["unit"] = kept[unit].to_numpy()
    if sensitive:
        df["s"] = kept[sensitive].to_numpy()
    rows = []
    for _, g in df.groupby(list(qis)):
        persons = g["unit"].nunique()
        share = g["unit"].value_counts().max() / len(g)
        robust = None
        if sensitive:
            values = set(g["s"])
            robust = min(len(set(g.loc[g["unit"] != u, "s"])) for u in g["unit"].unique())
            robust = min(robust, len(values))
        rows.append((len(g), persons, robust, share))
    return rows


def test_one_person_filling_a_class_is_not_released_as_k_anonymous():
    # person A: 6 requests aged 33, two types; 12 other persons aged 60-64, one request each
    n_other = 12
    t = pa.table({
        "age": [33] * 6 + [60 + i % 5 for i in range(n_other)],
        "sex": ["F"] * (6 + n_other),
        "type": ["a", "b"] * 3 + ["a", "b", "c"] * (n_other // 3),
        "pid": ["A"] * 6 + [f"p{i}" for i in range(n_other)],
    })
    ldiv = LDiversity("type", 2)
    records = anonymize(t, {"age": AGE}, KAnonymity(5, ("age",), 0.0), l_diversity=ldiv,
                        suppression="remove")
    # record-level k: A's six requests form a class of their own ("30-34")
    assert records.generalization["age"] == 1
    assert any(r[1] == 1 for r in _recount(t, records, ("age",), "pid", "type"))
    persons = anonymize(t, {"age": AGE}, KAnonymity(5, ("age",), 0.0, unit="pid"),
                        l_diversity=ldiv, suppression="remove")
    assert "pid" not in persons.table.column_names
    counted = _recount(t, persons, ("age",), "pid", "type")
    assert min(r[1] for r in counted) >= 5 and min(r[2] for r in counted) >= 2
    assert persons.report["persons"]["min_persons"] >= 5
    assert persons.report["persons"]["classes_below_k_persons"] == 0
    assert persons.report["risk"]["person"]["prosecutor"]["max"] <= 1 / 5


def test_l_over_persons_needs_diversity_without_any_one_person():
    # 5 persons in one class; all types but one come from person A alone
    t = pa.table({"sex": ["F"] * 8, "type": ["a", "b", "c", "d", "a", "a", "a", "a"],
                  "pid": ["A", "A", "A", "A", "p1", "p2", "p3", "p4"]})
    ldiv = LDiversity("type", 2)
    ok = anonymize(t, {"sex": SEX}, KAnonymity(5, ("sex",), 0.0), l_diversity=ldiv)
    assert ok.report["suppressed_records"] == 0  # record-level: 4 distinct types, passes
    with pytest.raises(NotAchievableError, match="distinct pid values"):
        anonymize(t, {"sex": SEX}, KAnonymity(5, ("sex",), 0.0, unit="pid"), l_diversity=ldiv)
    t2 = t.set_column(1, "type", pa.array(["a", "b", "c", "d", "b", "a", "a", "a"]))
    res = anonymize(t2, {"sex": SEX}, KAnonymity(5, ("sex",), 0.0, unit="pid"),
                    l_diversity=ldiv)
    assert res.report["suppressed_records"] == 0


@st.composite
def tables(draw):
    n = draw(st.integers(10, 80))
    n_units = draw(st.integers(1, 25))
    age = draw(st.lists(st.integers(0, 119), min_size=n, max_size=n))
    sex = draw(st.lists(st.sampled_from(["F", "M"]), min_size=n, max_size=n))
    typ = draw(st.lists(st.sampled_from(["a", "b", "c"]), min_size=n, max_size=n))
    unit = draw(st.lists(st.integers(0, n_units - 1), min_size=n, max_size=n))
    return pa.table({"age": age, "sex": sex, "type": typ, "pid": [f"u{u}" for u in unit]})


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tables(), st.integers(2, 4), st.sampled_from([0.0, 0.1, 0.3]),
       st.sampled_from([None, 2]))
def test_every_released_class_has_k_persons_and_l_without_any_one(t, k, supp, l_):
    ldiv = None if l_ is None else LDiversity("type", l_)
    model = KAnonymity(k, ("age", "sex"), supp, unit="pid")
    try:
        res = anonymize(t, {"age": AGE, "sex": SEX}, model, l_diversity=ldiv,
                        suppression="remove")
    except NotAchievableError:
        return
    counted = _recount(t, res, ("age", "sex"), "pid", "type" if l_ else None)
    for records, persons, robust, _ in counted:
        assert persons >= k
        if l_:
            assert robust >= l_
    assert res.report["suppressed_records"] <= int(supp * t.num_rows)


@pytest.mark.parametrize(("kw", "error", "message"), [
    ({"unit": ""}, ConfigError, "privacy-unit column"),
    ({"unit": "age"}, ConfigError, "cannot also be a quasi-identifier"),
])
def test_bad_unit_configuration(kw, error, message):
    with pytest.raises(error, match=message):
        KAnonymity(2, ("age",), 0.0, **kw)


def test_missing_or_null_unit_column_is_refused():
    t = pa.table({"age": [30, 31], "pid": ["a", None]})
    with pytest.raises(DataQualityError, match="'who' is not in the input"):
        anonymize(t, {"age": AGE}, KAnonymity(2, ("age",), 0.0, unit="who"))
    with pytest.raises(DataQualityError, match="missing values .* row 2"):
        anonymize(t, {"age": AGE}, KAnonymity(2, ("age",), 0.0, unit="pid"))


def test_cap_keeps_each_persons_first_records():
    t = pa.table({"pid": ["a", "b", "a", "a", "b", "a"], "t": [5, 1, 3, 1, 2, 4],
                  "rid": ["r1", "r2", "r3", "r4", "r5", "r6"]})
    kept, fig = cap_per_unit(t, "pid", ("t", "rid"), 2)
    assert kept["rid"].to_pylist() == ["r2", "r3", "r4", "r5"]  # input order kept
    assert fig == {"rows_capped": 2, "units_capped": 1, "max_records_per_unit_before": 4}
    same, fig = cap_per_unit(t, "pid", ("t", "rid"), 4)
    assert same.num_rows == 6 and fig["rows_capped"] == 0


@pytest.mark.parametrize("cap", [0, -1, 1.5, True, float("nan")])
def test_bad_cap_is_refused(cap):
    t = pa.table({"pid": ["a"], "t": [1]})
    with pytest.raises(ConfigError, match="integer >= 1"):
        cap_per_unit(t, "pid", ("t",), cap)


def test_random_ties_do_not_change_the_choice():
    rng = np.random.default_rng(7)
    t = pa.table({"pid": rng.choice(["a", "b", "c"], 50).tolist(),
                  "t": rng.integers(0, 3, 50).tolist(),
                  "rid": [f"r{i:03d}" for i in range(50)]})
    perm = pa.array(rng.permutation(50))
    a, _ = cap_per_unit(t, "pid", ("t", "rid"), 3)
    b, _ = cap_per_unit(t.take(perm), "pid", ("t", "rid"), 3)
    assert sorted(a["rid"].to_pylist()) == sorted(b["rid"].to_pylist())
