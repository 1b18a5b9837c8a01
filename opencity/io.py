"""The thin I/O layer: reading reference tables and writing partitions atomically."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from opencity.errors import DataQualityError
from transforms.schemas import Schema


def read_reference_csv(path: str | Path, schema: Schema) -> pa.Table:
    """Read a public reference table (districts, towers, stops) with its typed schema."""
    path = Path(path)
    if not path.is_file():
        raise DataQualityError(f"{path}: reference file not found")
    arrow_schema = schema.arrow_schema()
    try:
        header = pacsv.read_csv(path, read_options=pacsv.ReadOptions(skip_rows_after_names=1 << 30))
        missing = [n for n in schema.names if n not in header.column_names]
        if missing:
            raise DataQualityError(f"{path}: missing column(s) {', '.join(missing)}")
        return pacsv.read_csv(
            path,
            convert_options=pacsv.ConvertOptions(
                column_types={f.name: f.type for f in arrow_schema},
                include_columns=schema.names,
            ),
        )
    except pa.ArrowInvalid as err:
        raise DataQualityError(f"{path}: cannot read as {schema.name} ({err})") from err


def write_parquet_atomic(table: pa.Table, target: str | Path) -> Path:
    """Write ``table`` to ``target`` through a temporary name (a retry overwrites)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    try:
        pq.write_table(table, tmp, compression="zstd")
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()
    return target


def write_csv_atomic(table: pa.Table, target: str | Path) -> Path:
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    try:
        pacsv.write_csv(table, tmp)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()
    return target


def replace_dir(staging: Path, final: Path) -> Path:
    """Move a fully written staging directory into place, replacing any previous one."""
    final.parent.mkdir(parents=True, exist_ok=True)
    old = final.with_name(f".{final.name}.{uuid.uuid4().hex}.old")
    if final.exists():
        os.replace(final, old)
    os.replace(staging, final)
    if old.exists():
        shutil.rmtree(old)
    return final


@contextmanager
def discard_on_failure(staging: Path) -> Iterator[None]:
    """Delete a staged (not yet committed) output when the block raises.

    A product that failed its release checks must not linger in the run directory: it may
    hold exactly what the checks caught (e.g. an identifier). It is derived data, so a rerun
    rebuilds it.
    """
    try:
        yield
    except Exception:
        shutil.rmtree(staging, ignore_errors=True)
        raise
