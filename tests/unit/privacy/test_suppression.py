import math

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from opencity.errors import ConfigError
from privacy.guard import withheld_cells
from privacy.suppression import (
    SmallCountSuppression,
    secondary_suppression,
    suppress_small_counts,
)


# No deadline: one DuckDB connection per example is slow on a loaded 2-core machine.
@settings(deadline=None)
@given(st.lists(st.tuples(st.integers(0, 100), st.integers(0, 100)), min_size=1, max_size=50),
       st.integers(2, 30))
def test_no_published_count_below_threshold(rows, k):
    units = [min(u, n) for n, u in rows]
    table = pa.table({"n": [n for n, _ in rows], "units": units})
    out = suppress_small_counts(table, SmallCountSuppression(k, ("n",), "units"))
    assert "units" not in out.column_names
    for n_out, supp, u in zip(out["n"].to_pylist(), out["suppressed"].to_pylist(), units,
                              strict=True):
        assert supp == (u < k)
        assert (n_out is None) == supp


@pytest.mark.parametrize(("bad", "message"), [
    (0, "must be >= 2, got 0"), (1, "must be >= 2, got 1"), (-5, "must be >= 2, got -5"),
    (2.5, "must be an integer, got 2.5"), (math.nan, "must be an integer, got nan"),
    (True, "must be an integer, got True"), ("15", "must be an integer, got '15'")])
def test_threshold_validated(bad, message):
    with pytest.raises(ConfigError, match=f"suppression threshold {message}"):
        SmallCountSuppression(bad, ("n",), "units")


def test_a_rule_needs_a_count_column_and_its_columns_in_the_table():
    with pytest.raises(ConfigError, match="at least one count column"):
        SmallCountSuppression(15, (), "units")
    table = pa.table({"n": [20], "units": [20]})
    with pytest.raises(ConfigError, match=r"column\(s\) m, people not in the table"):
        suppress_small_counts(table, SmallCountSuppression(15, ("m",), "people"))


def test_threshold_is_inclusive_and_missing_units_are_withheld():
    # exactly k people are enough; fewer, or an unknown number, are not
    table = pa.table({"n": [7, 7, 7, 7], "units": [15, 14, None, 16]})
    out = suppress_small_counts(table, SmallCountSuppression(15, ("n",), "units"))
    assert out["n"].to_pylist() == [7, None, None, 7]
    assert out["suppressed"].to_pylist() == [False, True, True, False]
    assert out.column_names == ["n", "suppressed"]


def _grid(counts: list[list[int]]) -> pa.Table:
    rows = [{"d": f"D{i}", "t": f"T{j}", "n": n, "units": n}
            for i, line in enumerate(counts) for j, n in enumerate(line)]
    return pa.Table.from_pylist(rows)


@settings(deadline=None, max_examples=60)
@given(st.integers(2, 5), st.integers(2, 5), st.data())
def test_secondary_suppression_leaves_no_line_with_one_withheld_cell(nd, nt, data):
    counts = [[data.draw(st.integers(0, 40)) for _ in range(nt)] for _ in range(nd)]
    rule = SmallCountSuppression(10, ("n",), "units")
    primary = suppress_small_counts(_grid(counts), rule)
    out = secondary_suppression(primary, keys=("d", "t"), count_columns=("n",))
    # primary suppression is kept, published values are unchanged
    for a, b in zip(primary.to_pylist(), out.to_pylist(), strict=True):
        assert b["suppressed"] >= a["suppressed"]
        assert b["n"] is None or b["n"] == a["n"]
    for key in ("d", "t"):
        lines: dict[str, int] = {}
        for r in out.to_pylist():
            lines[r[key]] = lines.get(r[key], 0) + bool(r["suppressed"])
        assert 1 not in lines.values()
    # ... which the guard verifies: with the exact line totals published elsewhere (the
    # worst case), no withheld cell is recovered exactly by differencing one line
    totals = {"d": {f"D{i}": sum(line) for i, line in enumerate(counts)},
              "t": {f"T{j}": sum(line[j] for line in counts) for j in range(nt)}}
    check = withheld_cells(out, keys=("d", "t"), count="n", threshold=10,
                           margins=[{"totals": totals, "floors": {}}])
    assert check.details["lines_with_one_withheld_cell"] == 0


def test_primary_only_one_withheld_cell_is_recovered_and_the_guard_says_so():
    counts = [[30, 30, 3], [30, 30, 30]]
    rule = SmallCountSuppression(10, ("n",), "units")
    primary = suppress_small_counts(_grid(counts), rule)
    totals = {"t": {"T2": 33}}
    check = withheld_cells(primary, keys=("d", "t"), count="n", threshold=10,
                           margins=[{"totals": totals, "floors": {}}])
    assert not check.passed
    assert check.details["recovered_exactly"] == 1
    fixed = secondary_suppression(primary, keys=("d", "t"), count_columns=("n",))
    assert sum(fixed.column("suppressed").to_pylist()) == 4  # a 2 x 2 block
    again = withheld_cells(fixed, keys=("d", "t"), count="n", threshold=10,
                           margins=[{"totals": totals, "floors": {}}])
    assert again.details["recovered_exactly"] == 0


def test_secondary_suppression_names_missing_columns():
    table = _grid([[1, 2]]).append_column("suppressed", pa.array([True, False]))
    with pytest.raises(ConfigError, match="nope"):
        secondary_suppression(table, keys=("d", "nope"), count_columns=("n",))


def test_secondary_suppression_withholds_the_smallest_published_cell_of_the_line():
    """Line D1 has one withheld cell (b); of its published cells the one with the smallest
    count (c: 20, not a: 40) is withheld too, ties broken by the key values; the schema
    (int32 counts) is kept, and a line with no published cell left is left alone."""
    table = pa.table({
        "district": ["D1", "D1", "D1", "D2", "D2"],
        "type": ["a", "b", "c", "a", "b"],
        "n": pa.array([40, None, 20, None, None], pa.int32()),
        "m": pa.array([4, None, 2, None, None], pa.int32()),
        "suppressed": [False, True, False, True, True],
    })
    out = secondary_suppression(table, keys=("district",), count_columns=("n", "m"))
    assert out.schema == table.schema
    assert out["suppressed"].to_pylist() == [False, True, True, True, True]
    assert out["n"].to_pylist() == [40, None, None, None, None]
    assert out["m"].to_pylist() == [4, None, None, None, None]
    # ties on the count: the first by key value goes
    tie = pa.table({"district": ["D1"] * 3, "type": ["z", "x", "y"],
                    "n": [None, 7, 7], "suppressed": [True, False, False]})
    out = secondary_suppression(tie, keys=("district", "type"), count_columns=("n",))
    assert out["suppressed"].to_pylist() == [True, True, False]


def test_secondary_suppression_names_every_missing_column():
    table = pa.table({"district": ["D1"], "n": [3], "suppressed": [True]})
    with pytest.raises(ConfigError, match=r"^secondary suppression: column\(s\) type, m not in "
                                          r"the table$"):
        secondary_suppression(table, keys=("district", "type"), count_columns=("n", "m"))


def test_every_count_column_of_a_small_cell_is_withheld():
    table = pa.table({"n": [30, 30], "m": [5, 6], "units": [20, 3]})
    out = suppress_small_counts(table, SmallCountSuppression(15, ("n", "m"), "units"))
    assert out.column_names == ["n", "m", "suppressed"]
    assert out["n"].to_pylist() == [30, None] and out["m"].to_pylist() == [5, None]
    with pytest.raises(ConfigError, match="^suppression needs at least one count column$"):
        SmallCountSuppression(15, (), "units")
