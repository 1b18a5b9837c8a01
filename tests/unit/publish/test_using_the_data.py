"""docs/using-the-data.md works: its Python snippets run against a demo-like catalog (every
dataset of the demo, with the policy's columns, published by the default local target with
CSV copies and the sample city's reference datasets), and every dataset has pandas, DuckDB
and R snippets."""

from __future__ import annotations

import contextlib
import io
import re
from datetime import date, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from publish.base import DatasetRelease, Resource
from publish.local import LocalCatalog

REPO = Path(__file__).resolve().parents[3]
DOC = REPO / "docs" / "using-the-data.md"
DISTRICTS = [f"D{i:02d}" for i in range(1, 13)]
TYPES = ["pothole", "graffiti", "noise"]


def _weekly(day: date) -> pa.Table:
    rows = [(d, t) for d in DISTRICTS for t in TYPES]
    return pa.table({
        "week_start": pa.array([day] * len(rows), pa.date32()),
        "district_id": [d for d, _ in rows], "request_type": [t for _, t in rows],
        "requests": pa.array([(i * 7) % 23 for i in range(len(rows))], pa.int64()),
        "requests_error_bound_95": [4.9] * len(rows),
        "median_resolution_hours": [30.0] * len(rows),
        "median_resolution_hours_error_bound_95": [6.0] * len(rows)})


def _microdata(day: date) -> pa.Table:
    n = 40
    return pa.table({"age": ["[30, 40)"] * n, "gender": ["*"] * n,
                     "district_id": [DISTRICTS[i % 12] for i in range(n)],
                     "created": [day.isoformat()] * n,
                     "status": ["closed"] * n, "request_type": [TYPES[i % 3] for i in range(n)]})


def _dp(cols: dict, n: int) -> dict:
    return {**cols, "value": pa.array([50 + i for i in range(n)], pa.int64()),
            "noise_std": [2.0] * n, "error_bound_95": [3.9] * n, "mechanism": ["geometric"] * n}


def _mobility(day: date) -> dict[str, pa.Table]:
    d = pa.date32()
    hours = [(r, h) for r in DISTRICTS for h in range(24)]
    pairs = [(a, b) for a in DISTRICTS[:4] for b in DISTRICTS[:4] if a != b]
    return {
        "hourly_presence": pa.table(_dp({
            "date": pa.array([day] * len(hours), d), "region_id": [r for r, _ in hours],
            "hour": pa.array([h for _, h in hours], pa.int8())}, len(hours))),
        "od_matrix": pa.table(_dp({
            "date": pa.array([day] * len(pairs), d), "origin": [a for a, _ in pairs],
            "destination": [b for _, b in pairs]}, len(pairs))),
        "home_region": pa.table(_dp({"date": pa.array([day] * 12, d), "region_id": DISTRICTS},
                                    12)),
        "gyration": pa.table(_dp({"date": pa.array([day] * 3, d),
                                  "bin_lower_km": [0.0, 1.0, 5.0],
                                  "bin_upper_km": [1.0, 5.0, None]}, 3)),
    }


def _kpis(day: date) -> pa.Table:
    areas = ["city", *DISTRICTS]
    n = len(areas)
    return pa.table({
        "kpi_code": ["EN:ICT:1"] * n, "kpi_name": ["Household consumption"] * n,
        "fgssc_dimension": ["D2"] * n, "u4ssc_dimension": ["Environment"] * n,
        "area": areas, "period": [f"{day:%Y-%m}"] * n, "value": [1.5 + i for i in range(n)],
        "unit": ["kWh"] * n, "method": ["dp"] * n, "error_bound": [0.2] * n,
        "source_datasets": ["meter_readings"] * n,
        "computed_at": pa.array([datetime(2026, 11, 1)] * n, pa.timestamp("us", "UTC"))})


def _publish(cat: LocalCatalog, tmp: Path, name: str, part: str, tables: dict[str, pa.Table],
             extra: dict[str, str] | None = None) -> None:
    folder = tmp / "outputs" / name / part
    folder.mkdir(parents=True, exist_ok=True)
    resources = []
    for table_name, table in tables.items():
        pq.write_table(table, folder / f"{table_name}.parquet")
        resources.append(Resource(folder / f"{table_name}.parquet", table_name, "parquet",
                                  table_name, part))
    for file, text in (extra or {}).items():
        (folder / file).write_text(text)
        resources.append(Resource(folder / file, file.split(".")[0], file.split(".")[1], file,
                                  part))
    start = part.removeprefix("dt=")
    cat.publish(DatasetRelease(name=name, title=name, description="demo-like",
                               resources=tuple(resources),
                               privacy={"privacy_method": "differential_privacy"},
                               temporal_coverage=(start, start)))


@pytest.fixture(scope="module")
def demo_catalog(tmp_path_factory) -> Path:
    from sample_data import io as sio
    from sample_data.city import make_city
    from sample_data.service_requests import make_request_types

    tmp = tmp_path_factory.mktemp("demo-like")
    city_dir = tmp / "raw" / "city"
    city = make_city(42, 1.0)
    sio.write_csv(city.districts, city_dir / "districts.csv")
    sio.write_csv(city.towers, city_dir / "towers.csv")
    sio.write_csv(make_request_types(), city_dir / "request_types.csv")
    cat = LocalCatalog(tmp / "catalog", csv_copies=True, reference_dir=city_dir)
    for day in (date(2026, 10, 5), date(2026, 10, 12)):
        part = f"dt={day}"
        _publish(cat, tmp, "opencity-311-requests-weekly", part,
                 {"requests-weekly": _weekly(day)})
        _publish(cat, tmp, "opencity-311-requests-microdata", part,
                 {"requests-microdata": _microdata(day)})
    for day in (date(2026, 10, 5), date(2026, 10, 6)):
        _publish(cat, tmp, "opencity-cdr-mobility-daily", f"dt={day}", _mobility(day),
                 {"privacy.json": "{}"})
    for day in (date(2026, 10, 1), date(2026, 11, 1)):
        _publish(cat, tmp, "opencity-kpis", f"dt={day}", {"kpis": _kpis(day)},
                 {"dashboard.html": "<html></html>"})
    return tmp / "catalog"


def test_demo_like_tables_have_the_policys_columns():
    """The fixture publishes what the policy allows for each dataset (kept in step)."""
    policy = yaml.safe_load((REPO / "privacy" / "policy.yaml").read_text())["datasets"]
    day = date(2026, 10, 5)
    tables = {"opencity-311-requests-weekly": [_weekly(day)],
              "opencity-311-requests-microdata": [_microdata(day)],
              "opencity-cdr-mobility-daily": list(_mobility(day).values()),
              "opencity-kpis": [_kpis(day)]}
    for name, group in tables.items():
        for t in group:
            assert set(t.column_names) <= set(policy[name]["columns"]), name


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", DOC.read_text(encoding="utf-8"), re.DOTALL)


def test_every_python_snippet_runs_against_the_catalog(demo_catalog):
    import pandas as pd

    blocks = _blocks("python")
    assert blocks[0].startswith("CATALOG = ")
    namespace: dict = {}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(f"CATALOG = {str(demo_catalog)!r}\n", namespace)  # noqa: S102 - our own docs
        for block in blocks[1:]:
            exec(compile(block, str(DOC), "exec"), namespace)  # noqa: S102
    frames = {k: v for k, v in namespace.items() if isinstance(v, pd.DataFrame)}
    assert {"weekly", "records", "od", "kpis", "districts", "regions", "moves", "top",
            "by_district", "weekly_csv", "extents"} <= set(frames)
    empty = [k for k, v in frames.items() if v.empty]
    assert not empty, f"snippets returned nothing: {empty}"
    # whole tables: every partition is loaded, and the names are filled
    assert sorted(namespace["weekly"]["dt"].astype(str).unique()) == ["2026-10-05",
                                                                      "2026-10-12"]
    assert len(namespace["kpis"]) == 2 * 13
    assert namespace["weekly_csv"]["district_name"].notna().all()
    assert namespace["moves"]["origin_name"].notna().all()
    assert namespace["by_district"]["district_name"].notna().all()


def test_every_dataset_has_pandas_duckdb_and_r_snippets(demo_catalog):
    text = DOC.read_text(encoding="utf-8")
    sections = re.split(r"\n## ", text)
    datasets = sorted(p.parent.name for p in demo_catalog.glob("*/package.json"))
    assert len(datasets) == 7
    for ds in datasets:
        section = next((s for s in sections if f"`{ds}`" in s.splitlines()[0]), None)
        assert section is not None, f"no section for {ds}"
        assert "pandas:" in section and "DuckDB:" in section and "```r\n" in section, ds
        assert "read_parquet(" in section and "duckdb" in section, ds
