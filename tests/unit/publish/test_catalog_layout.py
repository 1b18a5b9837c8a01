"""The catalog as researchers load it (issue 22, items 3 and 4): one Parquet-only,
Hive-partitioned folder per table that pandas, pyarrow.dataset and DuckDB read whole; a CSV
copy of every table with names beside the codes; metadata and statements beside the data;
the city's districts, regions and request types published as reference datasets."""

from __future__ import annotations

import json
import os
from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from opencity.errors import ConfigError
from publish.base import DatasetRelease, Field, Resource, sha256_file
from publish.local import LocalCatalog, iter_releases

DAYS = ("dt=2026-10-05", "dt=2026-10-06")


@pytest.fixture(scope="module")
def city_dir(tmp_path_factory) -> Path:
    """The sample-data generator's reference files (districts, towers, request types)."""
    from sample_data import io
    from sample_data.city import make_city
    from sample_data.service_requests import make_request_types

    out = tmp_path_factory.mktemp("raw") / "city"
    city = make_city(7, 0.3)
    io.write_csv(city.districts, out / "districts.csv")
    io.write_csv(city.towers, out / "towers.csv")
    io.write_csv(make_request_types(), out / "request_types.csv")
    return out


def _mobility(tmp_path: Path, part: str, rows: int) -> DatasetRelease:
    day = date.fromisoformat(part.removeprefix("dt="))
    folder = tmp_path / "outputs" / part
    folder.mkdir(parents=True, exist_ok=True)
    regions = [f"D{i % 12 + 1:02d}" for i in range(rows)]
    pq.write_table(pa.table({
        "date": pa.array([day] * rows, pa.date32()), "region_id": regions,
        "hour": pa.array([i % 24 for i in range(rows)], pa.int8()),
        "value": pa.array(range(rows), pa.int64())}), folder / "hourly_presence.parquet")
    pq.write_table(pa.table({
        "date": pa.array([day] * 3, pa.date32()), "origin": ["D01", "D02", "D99"],
        "destination": ["D02", "D03", "D01"], "value": pa.array([5, 6, 7], pa.int64())}),
        folder / "od_matrix.parquet")
    (folder / "privacy.json").write_text(json.dumps({"epsilon": 1.0}))
    return DatasetRelease(
        name="opencity-mobility-test", title="Mobility", description="d",
        resources=(Resource(folder / "hourly_presence.parquet", "hourly_presence", "parquet",
                            "presence", part),
                   Resource(folder / "od_matrix.parquet", "od_matrix", "parquet", "od", part),
                   Resource(folder / "privacy.json", "privacy", "json", "statement", part)),
        fields=(Field("value", "integer", "noisy count"),),
        privacy={"privacy_method": "differential_privacy", "epsilon": 1.0},
        temporal_coverage=(day.isoformat(), day.isoformat()), accrual_periodicity="R/P1D",
        provenance={"run_id": part})


def _catalog(tmp_path: Path, city_dir: Path) -> tuple[LocalCatalog, Path]:
    root = tmp_path / "catalog"
    cat = LocalCatalog(root, csv_copies=True, reference_dir=city_dir, city_name="Test city")
    for i, part in enumerate(DAYS):
        cat.publish(_mobility(tmp_path, part, rows=30 + i))
    return cat, root / "opencity-mobility-test"


def test_every_table_is_one_parquet_only_hive_folder_that_loads_whole(tmp_path, city_dir):
    import duckdb
    import pandas as pd
    import pyarrow.dataset as pads

    _cat, ddir = _catalog(tmp_path, city_dir)
    for table, rows in (("hourly_presence", 30 + 31), ("od_matrix", 6)):
        folder = ddir / "data" / table
        files = [p for p in folder.rglob("*") if p.is_file()]
        assert files and all(p.suffix == ".parquet" for p in files), files
        assert sorted(p.parent.name for p in files) == list(DAYS)
        frame = pd.read_parquet(folder)
        assert len(frame) == rows and sorted(frame["dt"].astype(str).unique()) == [
            d.removeprefix("dt=") for d in DAYS]
        assert pads.dataset(folder, partitioning="hive").to_table().num_rows == rows
        got = duckdb.connect().execute(
            "SELECT count(*), count(DISTINCT dt) FROM read_parquet(?, hive_partitioning=true)",
            [f"{folder.as_posix()}/**/*.parquet"]).fetchone()
        assert got == (rows, 2)
        assert len({tuple(pq.read_schema(p).names) for p in files}) == 1
    # metadata and statements live beside the data, never inside it
    assert (ddir / "files" / DAYS[0] / "privacy.json").is_file()
    assert (ddir / "package.json").is_file() and (ddir / "datapackage.json").is_file()
    assert not (ddir / "resources").exists()


def test_csv_copies_of_every_table_carry_names(tmp_path, city_dir):
    cat, ddir = _catalog(tmp_path, city_dir)
    from sample_data.city import DISTRICT_NAMES

    od = pacsv.read_csv(ddir / "csv" / "od_matrix" / DAYS[0] / "part-0.csv").to_pylist()
    assert od[0]["origin"] == "D01" and od[0]["origin_name"] == DISTRICT_NAMES[0]
    assert od[0]["destination_name"] == DISTRICT_NAMES[1]
    assert not od[2]["origin_name"]  # a code the reference does not know stays unnamed
    hourly = pacsv.read_csv(ddir / "csv" / "hourly_presence" / DAYS[1] / "part-0.csv")
    assert hourly.column_names == ["date", "region_id", "region_name", "hour", "value"]
    assert hourly.num_rows == 31
    pkg = cat.load_package("opencity-mobility-test")
    names = {(r["name"], r["partition"]) for r in pkg["resources"]}
    assert {(f"{t}-csv", d) for t in ("hourly_presence", "od_matrix") for d in DAYS} <= names
    assert any(f["name"] == "origin_name" for f in pkg["opencity"]["fields"])
    assert not cat.verify("opencity-mobility-test")


def test_reference_datasets_are_published_with_names_and_coarse_extents(tmp_path, city_dir):
    import pandas as pd

    from sample_data.city import DISTRICT_NAMES
    from sample_data.service_requests import REQUEST_TYPE_NAMES

    _catalog(tmp_path, city_dir)
    root = tmp_path / "catalog"
    districts = pd.read_parquet(root / "opencity-districts" / "data" / "districts")
    assert list(districts["district_name"]) == list(DISTRICT_NAMES)
    regions = pd.read_parquet(root / "opencity-regions" / "data" / "regions")
    towers = pacsv.read_csv(city_dir / "towers.csv").to_pandas()
    assert regions["towers"].sum() == len(towers)
    assert (regions["region_name"] == regions["region_id"].map(
        dict(zip(districts["district_id"], districts["district_name"], strict=True)))).all()
    for _, r in regions.iterrows():  # coarse: whole 0.01 degree, and every tower inside
        mine = towers[towers["region_id"] == r["region_id"]]
        assert abs(r["lat_min"] * 100 - round(r["lat_min"] * 100)) < 1e-6
        assert r["lat_min"] <= mine["lat"].min() and mine["lat"].max() <= r["lat_max"]
        assert r["lon_min"] <= mine["lon"].min() and mine["lon"].max() <= r["lon_max"]
    types = pacsv.read_csv(root / "opencity-request-types" / "csv" / "request_types" /
                           "part-0.csv").to_pylist()
    assert {t["request_type"]: t["request_type_name"] for t in types} == REQUEST_TYPE_NAMES
    assert {r.name for r in iter_releases(root)} >= {
        "opencity-districts", "opencity-regions", "opencity-request-types"}


def test_rerun_writes_nothing_and_tampering_is_found(tmp_path, city_dir):
    cat, ddir = _catalog(tmp_path, city_dir)
    root = tmp_path / "catalog"
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    again = LocalCatalog(root, csv_copies=True, reference_dir=city_dir, city_name="Test city")
    res = again.publish(_mobility(tmp_path, DAYS[0], rows=30))
    assert not res.uploaded
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == before
    stray = ddir / "data" / "od_matrix" / DAYS[0] / "extra.parquet"
    os.link(ddir / "data" / "od_matrix" / DAYS[0] / "part-0.parquet", stray)
    assert any("extra.parquet" in p for p in cat.verify("opencity-mobility-test"))


def test_a_table_name_that_cannot_be_a_folder_is_refused(tmp_path):
    f = tmp_path / "x.parquet"
    pq.write_table(pa.table({"a": [1]}), f)
    rel = DatasetRelease(name="opencity-test", title="t", description="",
                         resources=(Resource(f, "a=b", "parquet", "", "dt=2026-10-05"),))
    with pytest.raises(ConfigError, match="cannot be laid out"):
        LocalCatalog(tmp_path / "catalog").publish(rel)


def test_a_snapshot_of_the_earlier_layout_is_carried_over(tmp_path):
    """resources/<partition>/<file> with .release.json (record format 1) -> data/, files/."""
    ddir = tmp_path / "catalog" / "opencity-test"
    snap = ddir / ".snapshots" / "s-old"
    part = snap / "resources" / "dt=2026-10-05"
    part.mkdir(parents=True)
    pq.write_table(pa.table({"district_id": ["D01"], "requests": [20]}), part / "counts.parquet")
    (part / "note.json").write_text("{}")
    meta = {"name": "opencity-test", "title": "Test", "description": "d", "fields": [],
            "privacy": {"privacy_method": "small_count_suppression"}, "tags": [],
            "temporal_coverage": ["2026-10-05", "2026-10-12"], "spatial_coverage": "",
            "accrual_periodicity": "R/P1W", "license_id": "CC-BY-4.0", "primary_key": []}
    files = [{"name": n, "file": f, "format": fmt, "description": "",
              "sha256": sha256_file(part / f), "size": (part / f).stat().st_size}
             for n, f, fmt in (("counts", "counts.parquet", "parquet"),
                               ("note", "note.json", "json"))]
    (part / ".release.json").write_text(json.dumps({
        "format": 1, "partition": "dt=2026-10-05", "release": meta, "resources": files,
        "provenance": {"run_id": "old"}}))
    os.symlink(".snapshots/s-old", ddir / "current")
    os.symlink("current/resources", ddir / "resources")
    src = tmp_path / "new.parquet"
    pq.write_table(pa.table({"district_id": ["D02"], "requests": [30]}), src)
    cat = LocalCatalog(tmp_path / "catalog")
    cat.publish(DatasetRelease(
        name="opencity-test", title="Test", description="d",
        resources=(Resource(src, "counts", "parquet", "", "dt=2026-10-12"),),
        privacy={"privacy_method": "small_count_suppression"},
        temporal_coverage=("2026-10-12", "2026-10-19")))
    import pandas as pd

    frame = pd.read_parquet(ddir / "data" / "counts")
    assert sorted(frame["requests"]) == [20, 30]
    assert (ddir / "files" / "dt=2026-10-05" / "note.json").is_file()
    assert not (ddir / "resources").exists() and not cat.verify("opencity-test")
