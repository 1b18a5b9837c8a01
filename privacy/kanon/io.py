"""Reading microdata and writing releases for ``opencity kanon`` (the only I/O of the package)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pv
import pyarrow.parquet as pq

from opencity.errors import DataQualityError
from opencity.io import (
    write_parquet_atomic,  # noqa: F401 - re-exported for the CLI
    write_text_atomic,
)

PARQUET_SUFFIXES = (".parquet", ".pq")


def read_table(path: str | Path, sep: str = ";", numeric: tuple[str, ...] = ()) -> pa.Table:
    """Read CSV (every column as text, like ARX) or Parquet (by extension).

    Args:
        path: input file.
        sep: CSV field separator.
        numeric: CSV columns to convert to numbers when every value parses (e.g. a
            sensitive attribute that needs ordered t-closeness).
    """
    path = Path(path)
    if not path.is_file():
        raise DataQualityError(f"input file {path} does not exist")
    if path.suffix.lower() in PARQUET_SUFFIXES:
        try:
            return pq.read_table(path)
        except (pa.ArrowInvalid, OSError) as err:
            raise DataQualityError(f"cannot read Parquet file {path}: {err}") from err
    try:
        with pv.open_csv(path, parse_options=pv.ParseOptions(delimiter=sep)) as reader:
            columns = reader.schema.names
        table = pv.read_csv(
            path,
            parse_options=pv.ParseOptions(delimiter=sep),
            convert_options=pv.ConvertOptions(
                column_types={c: pa.string() for c in columns},
                strings_can_be_null=False,
            ),
        )
    except (pa.ArrowInvalid, UnicodeDecodeError) as err:
        raise DataQualityError(
            f"cannot read CSV file {path} with separator {sep!r}: {err}. "
            "Check --sep and the file encoding (UTF-8)."
        ) from err
    for col in numeric:
        if col in table.column_names:
            for typ in (pa.int64(), pa.float64()):
                try:
                    converted = pc.cast(table.column(col), typ)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                    continue
                table = table.set_column(table.column_names.index(col), col, converted)
                break
    return table


def write_json_atomic(data: dict[str, Any], path: str | Path) -> None:
    """Write JSON (UTF-8, indented) atomically through opencity.io (where the user asked)."""
    write_text_atomic(json.dumps(data, indent=2, ensure_ascii=False) + "\n", path)
