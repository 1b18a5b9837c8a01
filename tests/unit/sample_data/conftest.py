"""Fixtures for the sample-data generator tests: one scale-1 city per session."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from sample_data.layout import RAW_LAYOUT


def read_raw(root: Path, rel: str) -> pa.Table:
    """Read one raw file (or a directory of part files) cast to its contract schema.

    CSV is parsed with the schema's column types (ISO-8601 timestamps with offset, true/false
    booleans), so a format deviation fails here.
    """
    schema = RAW_LAYOUT[rel].arrow_schema()
    path = root / rel
    if rel.endswith(".csv"):
        opts = pacsv.ConvertOptions(
            column_types={f.name: f.type for f in schema},
            strings_can_be_null=True,
            true_values=["true"], false_values=["false"],
        )
        table = pacsv.read_csv(path, convert_options=opts)
    elif path.is_dir():
        table = pads.dataset(sorted(path.glob("part-*.parquet")), format="parquet").to_table()
    else:
        table = pq.read_table(path)
    assert table.column_names == schema.names, f"{rel}: columns {table.column_names}"
    return table.cast(schema)


@dataclass(frozen=True)
class Generated:
    root: Path
    counts: dict[str, int]

    def read(self, rel: str) -> pa.Table:
        return read_raw(self.root, rel)


@pytest.fixture(scope="session")
def city(tmp_path_factory: pytest.TempPathFactory) -> Generated:
    """The default city (seed 42, scale 1, 14 days from Monday 2026-10-05)."""
    from sample_data import generate

    out = tmp_path_factory.mktemp("city") / "raw"
    return Generated(out, generate(out, seed=42, scale=1.0, progress=False))
