"""CSV copies of every Parquet table of a release, with names beside the codes.

``with_csv_copies(release, lookups, workdir)`` writes one CSV per Parquet resource (resource
name ``<table>-csv``, replacing a CSV copy the pipeline made of the same table) and inserts a
name column right after each code column it knows (``NAME_COLUMNS``), filled from the
reference datasets (publish/reference.py): ``district_id`` -> ``district_name``, ``origin`` ->
``origin_name``, ... A code without a name (e.g. a KPI's ``area`` 'city') leaves the name
empty. The Parquet files stay as the pipeline wrote them (codes only, the privacy step's
output); the names are public reference data and add no information about anyone.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from opencity.io import write_atomic
from publish.base import DatasetRelease, Field, Resource
from publish.reference import DISTRICTS, REGIONS, REQUEST_TYPES

#: code column -> (reference dataset, name column inserted after it)
NAME_COLUMNS: dict[str, tuple[str, str]] = {
    "district_id": (DISTRICTS, "district_name"),
    "area": (DISTRICTS, "area_name"),
    "region_id": (REGIONS, "region_name"),
    "origin": (REGIONS, "origin_name"),
    "destination": (REGIONS, "destination_name"),
    "request_type": (REQUEST_TYPES, "request_type_name"),
}


def join_names(table: pa.Table, lookups: dict[str, dict[str, str]]
               ) -> tuple[pa.Table, list[Field]]:
    """``table`` with a name column after each known code column; returns the fields added.

    A code column whose name column is already there, or whose reference dataset is not in
    ``lookups``, is left alone.
    """
    added = []
    for code, (dataset, label) in NAME_COLUMNS.items():
        if code not in table.column_names or label in table.column_names:
            continue
        names = lookups.get(dataset)
        if names is None:
            continue
        codes = table[code].to_pylist()
        column = pa.array([names.get(str(c)) if c is not None else None for c in codes],
                          pa.string())
        table = table.add_column(table.column_names.index(code) + 1, label, column)
        added.append(Field(label, "string", f"name of the {code} code, from the reference "
                                           f"dataset {dataset} (empty when it has none)"))
    return table, added


def with_csv_copies(release: DatasetRelease, lookups: dict[str, dict[str, str]],
                    workdir: str | Path) -> DatasetRelease:
    """``release`` with a CSV copy (names joined) of every Parquet resource, written under
    ``workdir``; the release's fields gain the name columns' descriptions."""
    resources = list(release.resources)
    parquet = [r for r in resources if r.format.lower() == "parquet"]
    tables = {(r.name, r.partition) for r in parquet}
    given = {(r.name.removesuffix("-csv"), r.partition): r for r in resources
             if r.format.lower() == "csv"}
    out = [r for r in resources if not (r.format.lower() == "csv" and
                                        (r.name.removesuffix("-csv"), r.partition) in tables)]
    fields = list(release.fields)
    known = {f.name for f in fields}
    for res in parquet:
        table, added = join_names(pq.read_table(res.path), lookups)
        target = Path(workdir) / (res.partition or "_") / f"{res.name}.csv"
        write_atomic(target, lambda tmp, table=table: pacsv.write_csv(table, tmp))
        old = given.get((res.name, res.partition))
        out.append(Resource(target, f"{res.name}-csv", "csv",
                            old.description if old else f"{res.description} (CSV copy)".strip(),
                            res.partition))
        for f in added:
            if f.name not in known:
                fields.append(f)
                known.add(f.name)
    return replace(release, resources=tuple(out), fields=tuple(fields))
