import math

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from opencity.errors import ConfigError
from privacy.suppression import SmallCountSuppression, suppress_small_counts


@settings(deadline=None)  # DuckDB's first query in a process takes longer than 200 ms
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


@pytest.mark.parametrize("bad", [0, 1, -5, 2.5, math.nan, True, "15"])
def test_threshold_validated(bad):
    with pytest.raises(ConfigError):
        SmallCountSuppression(bad, ("n",), "units")
