"""Readers for the raw sample-data layout, typed by the transforms.schemas contract."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from transforms import schemas

# Raw file (or part-file directory) -> schema of its columns.
LAYOUT: dict[str, schemas.Schema] = {
    "city/districts.csv": schemas.DISTRICTS,
    "city/towers.csv": schemas.TOWERS,
    "cdr": schemas.CDR,
    "service_requests/requests.csv": schemas.SERVICE_REQUESTS,
    "meters/registry.csv": schemas.METER_REGISTRY,
    "meters/readings": schemas.METER_READINGS,
    "transit/stops.csv": schemas.TRANSIT_STOPS,
    "transit/taps.parquet": schemas.TRANSIT_TAPS,
    "waste/pickups.parquet": schemas.WASTE_PICKUPS,
}


def read_raw(root: Path, rel: str) -> pa.Table:
    """Read one raw file (or a directory of part files) cast to its contract schema.

    CSV is parsed with the schema's column types (ISO-8601 timestamps with offset, true/false
    booleans), so a format deviation fails here.
    """
    schema = LAYOUT[rel].arrow_schema()
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
