"""The Frictionless descriptor describes the files: one schema per resource from the Parquet
file's own schema, the data dictionary's descriptions, units and primary keys, sha256 hashes,
and `frictionless validate` agrees (and disagrees once a file or a key is wrong)."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from publish.base import DatasetRelease, Field, Resource
from publish.frictionless import load_dictionary
from publish.local import LocalCatalog

frictionless = pytest.importorskip("frictionless")

DAY = dt.date(2026, 10, 5)
MOBILITY = "opencity-cdr-mobility-daily"


def _noisy(n: int) -> dict:
    return {"value": pa.array([7 + i for i in range(n)], pa.int64()),
            "noise_std": [1.5] * n, "error_bound_95": [2.9] * n, "mechanism": ["geometric"] * n}


def mobility_tables() -> dict[str, pa.Table]:
    """The four CDR mobility products with the columns the pipeline writes."""
    regions = ["R01", "R02", "R03"]
    date = pa.array([DAY] * 6, pa.date32())
    return {
        "hourly_presence": pa.table({"date": date, "region_id": regions * 2,
                                     "hour": pa.array([0, 0, 0, 1, 1, 1], pa.int32()),
                                     **_noisy(6)}),
        "od_matrix": pa.table({"date": date, "origin": ["R01", "R01", "R02", "R02", "R03", "R03"],
                               "destination": ["R02", "R03", "R01", "R03", "R01", "R02"],
                               **_noisy(6)}),
        "home_region": pa.table({"date": date[:3], "region_id": regions, **_noisy(3)}),
        "gyration": pa.table({"date": date[:3], "bin_lower_km": [0.0, 1.0, 5.0],
                              "bin_upper_km": pa.array([1.0, 5.0, None], pa.float64()),
                              **_noisy(3)}),
    }


def _publish(tmp_path: Path, tables: dict[str, pa.Table]) -> Path:
    out = tmp_path / "outputs" / MOBILITY / "dt=2026-10-05"
    out.mkdir(parents=True)
    resources = []
    for name, table in tables.items():
        pq.write_table(table, out / f"{name}.parquet")
        resources.append(Resource(out / f"{name}.parquet", name, "parquet", name, "dt=2026-10-05"))
    csv_dir = tmp_path / "csv" / MOBILITY / "dt=2026-10-05"
    csv_dir.mkdir(parents=True)
    pacsv.write_csv(tables["gyration"], csv_dir / "gyration.csv")
    resources.append(Resource(csv_dir / "gyration.csv", "gyration-csv", "csv", "copy",
                              "dt=2026-10-05"))
    rel = DatasetRelease(
        name=MOBILITY, title="Mobility", description="d", resources=tuple(resources),
        fields=(Field("value", "integer", "fallback description"),),
        privacy={"privacy_method": "differential_privacy", "epsilon": 1.0},
        temporal_coverage=("2026-10-05", "2026-10-06"), accrual_periodicity="R/P1D")
    LocalCatalog(tmp_path / "catalog").publish(rel)
    return tmp_path / "catalog" / MOBILITY


def test_each_table_gets_its_own_schema_from_its_file(tmp_path):
    tables = mobility_tables()
    ddir = _publish(tmp_path, tables)
    dp = json.loads((ddir / "datapackage.json").read_text())
    by_name = {r["name"]: r for r in dp["resources"]}
    assert dp["$schema"].endswith("/2.0/datapackage.json")
    dictionary = load_dictionary()
    for name, table in tables.items():
        res = by_name[f"{name.replace('_', '-')}-dt-2026-10-05"]
        assert res["type"] == "table" and "profile" not in res
        assert res["hash"].startswith("sha256:") and len(res["hash"]) == 71
        fields = res["schema"]["fields"]
        assert [f["name"] for f in fields] == table.column_names
        assert all(f.get("description") for f in fields), "every column is described"
        expected_key = dictionary["datasets"][MOBILITY]["resources"][name]["primary_key"]
        assert res["schema"]["primaryKey"] == expected_key
    types = {f["name"]: f["type"] for f in by_name["hourly-presence-dt-2026-10-05"]["schema"][
        "fields"]}
    assert types == {"date": "date", "region_id": "string", "hour": "integer",
                     "value": "integer", "noise_std": "number", "error_bound_95": "number",
                     "mechanism": "string"}
    gyr = {f["name"]: f for f in by_name["gyration-dt-2026-10-05"]["schema"]["fields"]}
    assert gyr["bin_lower_km"]["unit"] == "km"
    # the CSV copy is described with its table's schema, not a guess from the text
    csv = by_name["gyration-csv-dt-2026-10-05"]
    assert csv["schema"]["fields"] == by_name["gyration-dt-2026-10-05"]["schema"]["fields"]


def _validate(ddir: Path):
    cwd = os.getcwd()
    os.chdir(ddir)  # resource paths are relative to the descriptor
    try:
        return frictionless.validate("datapackage.json")
    finally:
        os.chdir(cwd)


def test_frictionless_validate_passes_and_catches_a_wrong_file(tmp_path):
    ddir = _publish(tmp_path, mobility_tables())
    report = _validate(ddir)
    assert report.valid, report.flatten(["rowNumber", "fieldName", "type", "note"])
    # A duplicated primary key: a second catalog whose OD table repeats a pair.
    tables = mobility_tables()
    od = tables["od_matrix"]
    tables["od_matrix"] = pa.concat_tables([od, od.slice(0, 1)])
    bad = _publish(tmp_path / "dup", tables)
    errors = {e[0] for e in _validate(bad).flatten(["type"])}
    assert "primary-key" in errors


def test_frictionless_validate_catches_a_hash_mismatch(tmp_path):
    # frictionless-py reads Parquet through pandas, without the bytes: it checks neither the
    # size nor the hash of a Parquet file (LocalCatalog.verify does); it does check CSV ones.
    ddir = _publish(tmp_path, mobility_tables())
    f = ddir / "csv" / "gyration" / "dt=2026-10-05" / "part-0.csv"
    tmp = f.with_name("x.tmp")
    tmp.write_bytes(f.read_bytes().replace(b"geometric", b"laplacian"))
    os.replace(tmp, f)
    errors = {e[0] for e in _validate(ddir).flatten(["type"])}
    assert "hash-count" in errors
    assert LocalCatalog(tmp_path / "catalog").verify(MOBILITY)
