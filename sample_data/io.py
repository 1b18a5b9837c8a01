"""Writing the generated tables: CSV with ISO-8601 timestamps, Parquet (single or in parts).

Every file is written under a temporary name and renamed, so a rerun replaces files instead of
leaving half-written ones. The only module of the package that touches the file system.
Raw data is a restricted zone (names, phones, e-mails, addresses): folders are created 0700
and files 0600 whatever the umask (opencity.io.restricted_dir / restricted_file).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from opencity.io import restricted_dir, write_atomic, write_csv_atomic

PART_PATTERN = "part-{:05d}.parquet"


def _csv_ready(table: pa.Table) -> pa.Table:
    """Timestamps as ISO-8601 strings with offset (``2026-10-05T08:00:00+00:00``)."""
    cols = []
    for name, col in zip(table.column_names, table.columns):
        if pa.types.is_timestamp(col.type):
            secs = pc.cast(col, pa.timestamp("s", tz="UTC"), safe=False)
            col = pc.strftime(secs, format="%Y-%m-%dT%H:%M:%S+00:00")
        cols.append(col)
    return pa.table(cols, names=table.column_names)


def write_csv(table: pa.Table, path: Path) -> int:
    """Write a table as CSV (booleans true/false, nulls empty); returns the row count."""
    write_csv_atomic(_csv_ready(table), path, restricted=True)
    return table.num_rows


def write_parquet(tables: Iterable[pa.Table], path: Path) -> int:
    """Stream tables into one Parquet file (one row group per table); returns the row count."""
    rows = 0

    def stream(tmp: Path) -> None:
        nonlocal rows
        writer: pq.ParquetWriter | None = None
        try:
            for t in tables:
                if writer is None:
                    writer = pq.ParquetWriter(tmp, t.schema)
                writer.write_table(t)
                rows += t.num_rows
        finally:
            if writer is not None:
                writer.close()
        if writer is None:
            raise ValueError(f"no table to write to {path.name}")

    write_atomic(path, stream, restricted=True)
    return rows


def clear_parts(directory: Path) -> None:
    """Remove part files of an earlier run from ``directory`` (only ``part-*.parquet``)."""
    if directory.is_dir():
        for old in directory.glob("part-*.parquet"):
            old.unlink()


def write_parts(tables: Iterable[pa.Table], directory: Path, chunk_rows: int) -> dict[str, int]:
    """Re-chunk a stream of tables into part files of exactly ``chunk_rows`` rows (the last may
    be shorter) named ``part-00000.parquet``...; returns rows per file name.

    Memory holds at most ``chunk_rows`` buffered rows plus one incoming table.
    """
    restricted_dir(directory)
    clear_parts(directory)
    counts: dict[str, int] = {}
    buffer: list[pa.Table] = []
    buffered = 0
    schema: pa.Schema | None = None

    def flush(table: pa.Table) -> None:
        path = directory / PART_PATTERN.format(len(counts))
        write_atomic(path, lambda tmp: pq.write_table(table, tmp), restricted=True)
        counts[path.name] = table.num_rows

    for t in tables:
        schema = t.schema
        buffer.append(t)
        buffered += t.num_rows
        while buffered >= chunk_rows:
            merged = pa.concat_tables(buffer)
            flush(merged.slice(0, chunk_rows))
            rest = merged.slice(chunk_rows)
            buffer, buffered = [rest], rest.num_rows
    if buffered or not counts:
        if schema is None:
            raise ValueError(f"no table to write to {directory.name}")
        flush(pa.concat_tables(buffer).combine_chunks() if buffer else schema.empty_table())
    return counts
