"""Privacy parameters are frozen and validated; bad input to anonymize gives clear errors."""

from __future__ import annotations

import dataclasses
import math

import pyarrow as pa
import pytest

from opencity.errors import ConfigError, DataQualityError, NotAchievableError
from privacy.kanon import Hierarchy, KAnonymity, LDiversity, TCloseness, anonymize


@pytest.mark.parametrize("k", [1, 0, -3, 2.5, math.nan, math.inf, True, "5"])
def test_bad_k(k):
    with pytest.raises(ConfigError):
        KAnonymity(k=k, quasi_identifiers=("a",))


@pytest.mark.parametrize("s", [-0.01, 1.0, 1.5, math.nan, math.inf, -math.inf, None])
def test_bad_suppression(s):
    with pytest.raises(ConfigError):
        KAnonymity(k=2, quasi_identifiers=("a",), max_suppression=s)


@pytest.mark.parametrize("s", [0.0, 0.04, 0.999999])
def test_suppression_edges_accepted(s):
    assert KAnonymity(k=2, quasi_identifiers=("a",), max_suppression=s).max_suppression == s


def test_frozen_and_qi_checks():
    cfg = KAnonymity(k=2, quasi_identifiers=["a", "b"])
    assert cfg.quasi_identifiers == ("a", "b")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.k = 3
    with pytest.raises(ConfigError, match="twice"):
        KAnonymity(k=2, quasi_identifiers=("a", "a"))
    with pytest.raises(ConfigError):
        KAnonymity(k=2, quasi_identifiers=())
    with pytest.raises(ConfigError):
        KAnonymity(k=2, quasi_identifiers="ab")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"l": 1, "variant": "distinct"},
        {"l": 2.5, "variant": "distinct"},
        {"l": math.nan, "variant": "entropy"},
        {"l": 3, "variant": "recursive"},  # c missing
        {"l": 3, "variant": "recursive", "c": 0},
        {"l": 3, "variant": "other"},
    ],
)
def test_bad_l_diversity(kwargs):
    with pytest.raises(ConfigError):
        LDiversity("s", **kwargs)


@pytest.mark.parametrize("t", [-0.1, 1.1, math.nan, math.inf])
def test_bad_t(t):
    with pytest.raises(ConfigError):
        TCloseness("s", t)


def _small():
    table = pa.table({"g": ["F", "M"] * 5, "s": ["x", "y", "x", "y", "x"] * 2})
    return table, {"g": Hierarchy.flat(["F", "M"])}


def test_qi_missing_from_data():
    table, hs = _small()
    hs["age"] = Hierarchy.flat(["1"])
    with pytest.raises(DataQualityError, match="'age' is not in the input"):
        anonymize(table, hs, KAnonymity(2, ("g", "age")))


def test_hierarchy_missing_for_qi():
    table, hs = _small()
    with pytest.raises(ConfigError, match="no hierarchy given for quasi-identifier 's'"):
        anonymize(table, hs, KAnonymity(2, ("g", "s")))


def test_l_larger_than_distinct_sensitive_values():
    table, hs = _small()
    with pytest.raises(ConfigError, match=r"l=3 is larger than the number of distinct values"):
        anonymize(table, hs, KAnonymity(2, ("g",)), l_diversity=LDiversity("s", 3))


def test_not_achievable_raises():
    table, hs = _small()
    with pytest.raises(NotAchievableError, match="not achievable with these settings"):
        anonymize(table, hs, KAnonymity(11, ("g",)))


def test_unknown_metric():
    table, hs = _small()
    with pytest.raises(ConfigError, match="unknown metric"):
        anonymize(table, hs, KAnonymity(2, ("g",)), metric="height")


def _failing(table, t, distance):
    from privacy.kanon.anonymize import prepare
    from privacy.kanon.lattice import node_classes

    hs = {"g": Hierarchy.flat(["A", "B"])}
    prep = prepare(table, hs, KAnonymity(2, ("g",)), t_closeness=TCloseness("s", t, distance))
    cls = node_classes(prep.problem, (0,), prep.criteria)
    return cls.failing.tolist()  # classes in order A, B


def test_t_closeness_distances_by_hand():
    # A: sensitive {1, 3}; B: eight times 2. Whole table: q = (0.1, 0.8, 0.1) for 1, 2, 3.
    table = pa.table({"g": ["A", "A"] + ["B"] * 8, "s": [1, 3] + [2] * 8})
    # equal distance: A = 0.5 * (0.4 + 0.8 + 0.4) = 0.8, B = 0.5 * (0.1 + 0.2 + 0.1) = 0.2
    assert _failing(table, 0.79, "equal") == [True, False]
    assert _failing(table, 0.8, "equal") == [False, False]
    assert _failing(table, 0.19, "equal") == [True, True]
    # ordered distance: A = (0.4 + 0.4 + 0) / 2 = 0.4, B = (0.1 + 0.1 + 0) / 2 = 0.1
    assert _failing(table, 0.39, "ordered") == [True, False]
    assert _failing(table, 0.4, "ordered") == [False, False]
    assert _failing(table, 0.09, "ordered") == [True, True]


# -- every rule of the models, at its boundary, with the message that names it -------------
_K, _L, _T = KAnonymity, LDiversity, TCloseness

_MODEL_ERRORS = [
    (lambda: _K(1, ("a",)), "k must be at least 2 (k=1 protects nothing), got 1"),
    (lambda: _K(2.0, ("a",)), "k must be an integer, got 2.0"),
    (lambda: _K(True, ("a",)), "k must be a number, got True"),
    (lambda: _K("5", ("a",)), "k must be a number, got '5'"),
    (lambda: _K(5, "age"), "quasi_identifiers must be a tuple of column names"),
    (lambda: _K(5, {"age"}), "quasi_identifiers must be a tuple of column names"),
    (lambda: _K(5, ()), "at least one quasi-identifier is needed"),
    (lambda: _K(5, ("a", "")), "quasi-identifier names must be non-empty strings"),
    (lambda: _K(5, ("a", 3)), "quasi-identifier names must be non-empty strings"),
    (lambda: _K(5, ("a", "a")), "quasi-identifier listed twice: ['a']"),
    (lambda: _K(5, ("a",), 1.0), ("max_suppression must be in [0, 1) (a share of records, "
                                  "e.g. 0.04), got 1.0")),
    (lambda: _K(5, ("a",), -0.01), "max_suppression must be in [0, 1)"),
    (lambda: _K(5, ("a",), math.inf), "max_suppression must be finite, got inf"),
    (lambda: _K(5, ("a",), "x"), "max_suppression must be a number, got 'x'"),
    (lambda: _L("", 2), "l-diversity needs the name of the sensitive column"),
    (lambda: _L(3, 2), "l-diversity needs the name of the sensitive column"),
    (lambda: _L("s", 2, "other"), ("l-diversity variant must be distinct, entropy or "
                                   "recursive, got 'other'")),
    (lambda: _L("s", 1), "l must be at least 2 for distinct l-diversity, got 1"),
    (lambda: _L("s", 1, "recursive", c=3), "l must be at least 2 for recursive l-diversity, got 1"),
    (lambda: _L("s", 0.5, "entropy"), "l must be at least 1 for entropy l-diversity, got 0.5"),
    (lambda: _L("s", 0.99, "entropy"), "l must be at least 1 for entropy l-diversity"),
    (lambda: _L("s", 2.5), "l must be an integer, got 2.5"),
    (lambda: _L("s", 2.5, "recursive", c=3), "l must be an integer, got 2.5"),
    (lambda: _L("s", math.nan, "entropy"), "l must be finite, got nan"),
    (lambda: _L("s", 2, "recursive"), "recursive-(c,l)-diversity needs c (e.g. --c 3)"),
    (lambda: _L("s", 2, "recursive", c=0), "c must be positive, got 0"),
    (lambda: _L("s", 2, "recursive", c="x"), "c must be a number, got 'x'"),
    (lambda: _L("s", 2, "distinct", c="x"), "c must be a number, got 'x'"),
    (lambda: _T("", 0.2), "t-closeness needs the name of the sensitive column"),
    (lambda: _T(None, 0.2), "t-closeness needs the name of the sensitive column"),
    (lambda: _T("s", 1.01), "t must be in [0, 1], got 1.01"),
    (lambda: _T("s", -0.01), "t must be in [0, 1], got -0.01"),
    (lambda: _T("s", "x"), "t must be a number, got 'x'"),
    (lambda: _T("s", 0.2, "other"), ("t-closeness distance must be auto, equal or "
                                     "ordered, got 'other'")),
]


@pytest.mark.parametrize(("make", "message"), _MODEL_ERRORS,
                          ids=[m for _f, m in _MODEL_ERRORS])
def test_every_model_rule_names_what_is_wrong(make, message):
    with pytest.raises(ConfigError) as err:
        make()
    assert message in str(err.value)


def test_model_boundaries_that_are_allowed():
    assert _K(2, ["a", "b"], 0.0).quasi_identifiers == ("a", "b")  # a list becomes a tuple
    assert _K(5, ("a",), 0.999).max_suppression == 0.999
    assert _L("s", 2).l == 2 and _L("s", 2, "recursive", c=0.5).c == 0.5
    assert _L("s", 1.0, "entropy").l == 1.0 and _L("s", 1.5, "entropy").variant == "entropy"
    assert _L("s", 3, "distinct", c=2).c == 2  # c is ignored but still checked
    assert _T("s", 0.0).t == 0.0 and _T("s", 1.0, "ordered").distance == "ordered"
    assert _T("s", 0.5, "equal").distance == "equal"


def test_person_unit_column_rules():
    """Issue 20: k counted over persons names the unit column, never a quasi-identifier."""
    ok = KAnonymity(k=5, quasi_identifiers=("district_id", "created"), unit="requester_pid")
    assert ok.unit == "requester_pid"
    assert KAnonymity(k=5, quasi_identifiers=("district_id",)).unit is None
    for bad in ("", 7):
        with pytest.raises(ConfigError, match="^unit must be the name of the privacy-unit "
                                              "column$"):
            KAnonymity(k=5, quasi_identifiers=("district_id",), unit=bad)
    with pytest.raises(ConfigError, match="^the privacy-unit column 'district_id' cannot "
                                          "also be a quasi-identifier$"):
        KAnonymity(k=5, quasi_identifiers=("district_id", "created"), unit="district_id")
