"""The row-count drop rule compares a partition with the previous interval's, not with a
partition years earlier (a sparse real history: Baltimore's extract has weeks years apart)."""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.parquet as pq

from expectations.gate import previous_partition_rows, suite_context


def _part(root, name, rows):
    d = root / name
    d.mkdir(parents=True)
    pq.write_table(pa.table({"x": list(range(rows))}), d / "part-0.parquet")
    return d


def test_only_recent_partitions_are_the_previous_one(tmp_path):
    _part(tmp_path, "dt=2015-02-16", 58)
    current = tmp_path / "dt=2018-01-08"
    assert previous_partition_rows(current) == 58  # no bound: the latest earlier one
    assert previous_partition_rows(current, "dt=2017-12-25") is None
    _part(tmp_path, "dt=2018-01-01", 40)
    assert previous_partition_rows(current, "dt=2017-12-25") == 40


def test_suite_context_bounds_the_previous_partition_by_two_intervals(tmp_path):
    _part(tmp_path, "dt=2015-02-16", 58)
    week = (datetime(2018, 1, 8, tzinfo=UTC), datetime(2018, 1, 15, tzinfo=UTC))
    table = pa.table({"x": [1, 2, 3]})
    ctx = suite_context("t", table, {"interval": week,
                                     "previous_partition": tmp_path / "dt=2018-01-08"})
    assert ctx.previous_rows is None  # a partition three years earlier is not "previous"
    _part(tmp_path, "dt=2017-12-25", 58)  # two weeks before: still compared
    ctx = suite_context("t", table, {"interval": week,
                                     "previous_partition": tmp_path / "dt=2018-01-08"})
    assert ctx.previous_rows == 58
