"""Hierarchies: ARX CSV reading, validation errors and builders."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow as pa
import pytest

from opencity.errors import ConfigError, DataQualityError
from privacy.kanon import Hierarchy

ADULT = Path(__file__).resolve().parents[3] / "data" / "adult_arx" / "hierarchies"


def test_reads_arx_age_hierarchy():
    h = Hierarchy.from_csv(ADULT / "adult_hierarchy_age.csv")
    assert h.height == 4
    assert len(h.leaves) == 100
    assert h.generalize("39", 0) == "39"
    assert h.generalize("39", 4) == "*"
    assert h.labels(4) == ["*"]
    # every leaf of one level-1 group shares its higher levels (consistency)
    up = h.up_map(1, 2)
    assert len(up) == len(h.labels(1))


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("a;x;*\nb;x\n", "row 2"),  # ragged
        ("a;x;*\nb;y;top\n", "one top value"),
        ("a;x;*\na;x;*\n", "appears twice"),
        ("a;x;g;*\nb;x;h;*\n", "inconsistent levels"),
        ("a\n", "at least one level"),
    ],
)
def test_invalid_hierarchy_is_rejected_with_position(tmp_path, text, fragment):
    path = tmp_path / "h.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=fragment):
        Hierarchy.from_csv(path)


def test_missing_file_is_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read hierarchy"):
        Hierarchy.from_csv(tmp_path / "nope.csv")


def test_value_not_in_hierarchy_names_column_value_and_row():
    h = Hierarchy.flat(["F", "M"])
    table = pa.table({"gender": ["F", "M", "X", "F"]})
    with pytest.raises(DataQualityError, match=r"column 'gender': value 'X' \(row 3\)"):
        h.encode(table, "gender")


def test_missing_value_must_be_a_leaf():
    h = Hierarchy.flat(["F", "M"])
    with pytest.raises(DataQualityError, match="'NULL'"):
        h.encode(pa.table({"g": ["F", None]}), "g")
    ok = Hierarchy.flat(["F", "M", "NULL"])
    assert ok.encode(pa.table({"g": ["F", None]}), "g").tolist() == [0, 2]


def test_intervals_nest_and_encode_integers_and_floats():
    h = Hierarchy.intervals(0, 120, widths=(5, 10, 20))
    assert h.height == 4
    assert h.rows[39] == ("39", "[35, 40)", "[30, 40)", "[20, 40)", "*")
    table = pa.table({"age": pa.array([39, 0, 120], pa.int64()),
                      "agef": pa.array([39.0, 0.0, 120.0])})
    assert h.encode(table, "age").tolist() == [39, 0, 120]
    assert h.encode(table, "agef").tolist() == [39, 0, 120]
    with pytest.raises(ConfigError, match="multiple"):
        Hierarchy.intervals(0, 10, widths=(5, 7))


def test_timestamps_truncate_to_base_level_and_weeks_nest_in_months():
    h = Hierarchy.timestamps(dt.date(2024, 1, 1), dt.date(2024, 3, 1),
                             levels=("day", "week", "month"))
    assert h.generalize("2024-01-31", 1) == "W2024-01-29"
    assert h.generalize("2024-02-01", 1) == "W2024-01-29"
    # the week starting 29 January belongs to January, for both days
    assert h.generalize("2024-02-01", 2) == "2024-01"
    ts = pa.array([dt.datetime(2024, 1, 31, 23, 59, tzinfo=dt.UTC),
                   dt.datetime(2024, 2, 1, 0, 1, tzinfo=dt.UTC)], pa.timestamp("us", "UTC"))
    codes = h.encode(pa.table({"created_at": ts}), "created_at")
    assert [h.leaves[i] for i in codes] == ["2024-01-31", "2024-02-01"]
    hourly = Hierarchy.timestamps(dt.date(2024, 1, 1), dt.date(2024, 1, 2))
    assert hourly.height == 4 and hourly.leaves[13] == "2024-01-01T13"


def test_masking_for_zip_codes():
    h = Hierarchy.masking(["12345", "12399", "54321"])
    assert h.rows[0] == ("12345", "1234*", "123**", "12***", "1****", "*****", "*")
    with pytest.raises(ConfigError, match="same length"):
        Hierarchy.masking(["123", "1234"])


def test_yaml_tree_pads_shallow_leaves(tmp_path):
    path = tmp_path / "types.yaml"
    path.write_text(
        "request_type:\n"
        "  infrastructure:\n"
        "    roads: [pothole, streetlight_out]\n"
        "  noise: [noise]\n",
        encoding="utf-8",
    )
    h = Hierarchy.from_yaml(path, key="request_type")
    assert h.height == 3
    assert h.generalize("pothole", 1) == "roads"
    assert h.generalize("pothole", 2) == "infrastructure"
    assert h.generalize("noise", 1) == "noise"
    assert h.generalize("noise", 2) == "noise"


def test_geo_grid_maps_coordinates_to_cells_and_districts():
    districts = {"district_id": ["D1", "D2"], "lat_min": [0.0, 0.0], "lat_max": [0.02, 0.02],
                 "lon_min": [0.0, 0.02], "lon_max": [0.02, 0.04]}
    h = Hierarchy.geo_grid(districts, cell_deg=0.01, city="Springfield")
    assert h.height == 3
    table = pa.table({"lat": [0.005, 0.015], "lon": [0.005, 0.035]})
    codes = h.encode(table, "location")
    cells = [h.leaves[i] for i in codes]
    assert cells == ["cell_0_0", "cell_1_3"]
    assert [h.generalize(c, 1) for c in cells] == ["D1", "D2"]
    assert h.generalize("cell_1_3", 2) == "Springfield"
    assert h.source_columns == ("lat", "lon")


def test_311_release_shape_with_builders():
    """The 311 microdata QIs: age band, gender, district, week, request type."""
    from privacy.kanon import KAnonymity, anonymize

    n = 400
    days = [dt.datetime(2024, 3, 1, 8, tzinfo=dt.UTC) + dt.timedelta(hours=7 * i)
            for i in range(n)]
    table = pa.table({
        "request_id": [f"r{i}" for i in range(n)],
        "requester_age": pa.array([None if i % 23 == 0 else 18 + (i * 7) % 60
                                   for i in range(n)], pa.int64()),
        "requester_gender": [("F", "M")[i % 2] for i in range(n)],
        "district_id": [f"D{i % 4}" for i in range(n)],
        "created_at": pa.array(days, pa.timestamp("us", "UTC")),
        "request_type": [("pothole", "noise", "graffiti")[i % 3] for i in range(n)],
    })
    hs = {
        "requester_age": Hierarchy.intervals(0, 120, widths=(5, 10, 20)).with_missing(),
        "requester_gender": Hierarchy.flat(["F", "M", "X"]).with_missing(),
        "district_id": Hierarchy.from_tree({"north": ["D0", "D1"], "south": ["D2", "D3"]}),
        "created_at": Hierarchy.timestamps(dt.date(2024, 1, 1), dt.date(2025, 1, 1),
                                           levels=("week", "month")),
        "request_type": Hierarchy.from_tree({"streets": ["pothole", "graffiti"],
                                             "nuisance": ["noise"]}),
    }
    res = anonymize(table, hs, KAnonymity(5, tuple(hs), 0.05), suppression="remove")
    out = res.table.to_pandas()
    assert out.groupby(list(hs)).size().min() >= 5
    assert len(out) >= n - 20
    assert out["request_id"].notna().all()  # non-QI columns pass through
    week_level = res.generalization["created_at"]
    assert set(out["created_at"]) <= set(hs["created_at"].labels(week_level))
