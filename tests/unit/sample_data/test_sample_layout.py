"""The generated files follow the raw-layout contract of transforms.schemas."""

from __future__ import annotations

import math

import pyarrow.compute as pc
import pytest

from sample_data.layout import RAW_LAYOUT as LAYOUT


@pytest.mark.parametrize("rel", sorted(LAYOUT))
def test_file_matches_its_schema(city, rel):
    schema = LAYOUT[rel]
    table = city.read(rel)  # casts to the schema: fails on a wrong type or column order
    assert table.num_rows > 0
    written = sum(n for path, n in city.counts.items() if path == rel or path.startswith(rel + "/"))
    assert written == table.num_rows
    for col in schema.columns:
        values = table.column(col.name)
        if col.required:
            assert values.null_count == 0, f"{rel}.{col.name} has nulls"
        if col.allowed is not None:
            seen = set(pc.unique(values.drop_null()).to_pylist())
            assert seen <= set(col.allowed), f"{rel}.{col.name}: {seen - set(col.allowed)}"
        if col.min_value is not None and values.null_count < len(values):
            assert pc.min(values).as_py() >= col.min_value
        if col.max_value is not None and values.null_count < len(values):
            assert pc.max(values).as_py() <= col.max_value
    for key in schema.key:
        assert pc.count_distinct(table.column(key)).as_py() == table.num_rows, f"{rel}.{key}"


def test_exactly_the_contract_files_are_written(city):
    files = {p.relative_to(city.root).as_posix() for p in city.root.rglob("*") if p.is_file()}
    assert files == set(city.counts)
    assert not [f for f in files if f.split("/")[-1].startswith(".")], "temporary file left"
    for rel in files:
        top = rel.split("/part-")[0] if "/part-" in rel else rel
        assert top in LAYOUT


def test_csv_text_format(city):
    lines = (city.root / "service_requests" / "requests.csv").read_text().splitlines()
    header, first = lines[0], lines[1]
    assert header.replace('"', "").split(",")[:3] == ["request_id", "created_at", "closed_at"]
    created = first.split(",")[1].strip('"')
    assert created.endswith("+00:00") and "T" in created  # ISO-8601 with offset
    registry = (city.root / "meters" / "registry.csv").read_text()
    assert ",true," in registry and ",false," in registry


def test_timestamps_lie_in_the_window(city):
    start, end = "2026-10-05T00:00:00+00:00", "2026-10-19T00:00:00+00:00"
    for rel, col in [("cdr", "event_time"), ("meters/readings", "reading_time"),
                     ("transit/taps.parquet", "tap_time"),
                     ("service_requests/requests.csv", "created_at")]:
        t = city.read(rel).column(col)
        lo, hi = pc.min(t).as_py().isoformat(), pc.max(t).as_py().isoformat()
        assert start <= lo and hi < end, (rel, lo, hi)


def test_scale_one_sizes(city):
    def total(prefix: str) -> int:
        return sum(n for p, n in city.counts.items() if p.startswith(prefix))

    assert math.isclose(total("cdr/"), 100_000, rel_tol=0.05)
    assert math.isclose(total("service_requests/"), 3_000, rel_tol=0.1)
    assert total("meters/registry.csv") == 4_000
    assert math.isclose(total("transit/taps"), 20_000, rel_tol=0.1)
