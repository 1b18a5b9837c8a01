"""Checks every real run's catalog and outputs must pass (shared by the DAG and demo tests)."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow.parquet as pq


def frictionless_errors(catalog: Path) -> dict[str, list]:
    """`frictionless validate` of every datapackage.json in ``catalog``: dataset -> errors."""
    import frictionless

    found = {}
    cwd = os.getcwd()
    for descriptor in sorted(catalog.glob("*/datapackage.json")):
        os.chdir(descriptor.parent)  # resource paths are relative to the descriptor
        try:
            report = frictionless.validate("datapackage.json")
        finally:
            os.chdir(cwd)
        found[descriptor.parent.name] = report.flatten(["taskName", "type", "note"])
    return found


def undescribed_columns(catalog: Path) -> list[str]:
    """Published columns without a description in datapackage.json (the data dictionary)."""
    import json

    missing = []
    for descriptor in sorted(catalog.glob("*/datapackage.json")):
        for res in json.loads(descriptor.read_text())["resources"]:
            for field in res.get("schema", {}).get("fields", []):
                if not field.get("description"):
                    missing.append(f"{descriptor.parent.name}/{res['name']}.{field['name']}")
    return missing


def hive_problems(outputs: Path) -> list[str]:
    """Read every dataset of outputs/ as one Hive-partitioned table with DuckDB."""
    import duckdb

    problems = []
    datasets = sorted(p for p in outputs.iterdir() if p.is_dir() and not p.name.startswith("."))
    for ds in datasets:
        stray = [p.relative_to(outputs).as_posix() for p in ds.glob("*/*")
                 if p.is_file() and p.suffix == ".csv"]
        if stray:
            problems.append(f"{ds.name}: CSV in the Parquet tree: {stray[:3]}")
        files = sorted(ds.glob("dt=*/*.parquet"))
        names = sorted({f.name for f in files})
        for name in names:
            expected = sum(pq.read_metadata(f).num_rows for f in files if f.name == name)
            glob = (ds / "*" / name).as_posix()
            try:
                con = duckdb.connect()
                got, parts = con.execute(
                    "SELECT count(*), count(DISTINCT dt) FROM read_parquet(?, "
                    "hive_partitioning=true)", [glob]).fetchone()
            except duckdb.Error as err:
                problems.append(f"{ds.name}/*/{name}: DuckDB cannot read it: {err}")
                continue
            with_rows = {f.parent.name for f in files
                         if f.name == name and pq.read_metadata(f).num_rows}
            if got != expected or parts != len(with_rows):
                problems.append(f"{ds.name}/*/{name}: {got} rows in {parts} partitions, "
                                f"expected {expected}")
    return problems
