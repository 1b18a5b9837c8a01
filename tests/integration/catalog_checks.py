"""Checks every real run's catalog and outputs must pass (shared by the DAG and demo tests)."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq


def frictionless_errors(catalog: Path) -> dict[str, list]:
    """`frictionless validate` (frictionless 5's command line, as a data user runs it) of
    every datapackage.json in ``catalog``: dataset -> errors ([task, type, note] each)."""
    import json
    import subprocess
    import sys

    exe = Path(sys.executable).with_name("frictionless")
    found = {}
    for descriptor in sorted(catalog.glob("*/datapackage.json")):
        # resource paths are relative to the descriptor
        proc = subprocess.run([str(exe), "validate", "--json", "datapackage.json"],
                              cwd=descriptor.parent, capture_output=True, text=True,
                              timeout=900, check=False)
        try:
            report = json.loads(proc.stdout)
        except ValueError:
            report = {"valid": False, "errors": [{"type": "cli", "note": proc.stderr[-500:]}],
                      "tasks": []}
        errors = [["", e.get("type"), e.get("note")] for e in report.get("errors", [])]
        errors += [[t.get("name"), e.get("type"), e.get("note")]
                   for t in report.get("tasks", []) for e in t.get("errors", [])]
        if (proc.returncode != 0 or not report.get("valid")) and not errors:
            errors = [["", "exit", f"frictionless validate exited {proc.returncode}"]]
        found[descriptor.parent.name] = errors
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


def catalog_load_problems(catalog: Path) -> list[str]:
    """Every table of every dataset loads whole from its documented folder (issue 22):
    ``data/<table>/`` holds Parquet only, pandas, pyarrow.dataset (hive) and DuckDB read all
    its rows with the same columns in every partition, and ``csv/<table>/`` has a CSV copy of
    every partition."""
    import duckdb
    import pandas as pd
    import pyarrow.dataset as pads

    problems = []
    datasets = sorted(p.parent for p in catalog.glob("*/package.json"))
    for ds in datasets:
        tables = sorted(p for p in (ds / "data").iterdir() if p.is_dir())
        if not tables:
            problems.append(f"{ds.name}: no table under data/")
        for folder in tables:
            label = f"{ds.name}/data/{folder.name}"
            files = sorted(p for p in folder.rglob("*") if p.is_file())
            other = [p.name for p in files if p.suffix != ".parquet"]
            if other:
                problems.append(f"{label}: not Parquet: {other[:3]}")
            parquet = [p for p in files if p.suffix == ".parquet"]
            if len({tuple(pq.read_schema(p).names) for p in parquet}) > 1:
                problems.append(f"{label}: partitions with different columns")
            rows = sum(pq.read_metadata(p).num_rows for p in parquet)
            try:
                got = {"pandas": len(pd.read_parquet(folder)),
                       "pyarrow": pads.dataset(folder, partitioning="hive").count_rows(),
                       "duckdb": duckdb.connect().execute(
                           "SELECT count(*) FROM read_parquet(?, hive_partitioning=true)",
                           [f"{folder.as_posix()}/**/*.parquet"]).fetchone()[0]}
            except Exception as err:  # noqa: BLE001 - reported, not raised
                problems.append(f"{label}: does not load whole: {type(err).__name__}: {err}")
                continue
            if set(got.values()) != {rows}:
                problems.append(f"{label}: {got} rows loaded, {rows} in the files")
            csv_parts = {p.parent.relative_to(ds / "csv" / folder.name).as_posix()
                         for p in (ds / "csv" / folder.name).rglob("part-0.csv")}
            data_parts = {p.parent.relative_to(folder).as_posix() for p in parquet}
            if csv_parts != data_parts:
                problems.append(f"{label}: CSV copies for {sorted(csv_parts)}, Parquet for "
                                f"{sorted(data_parts)}")
    return problems
