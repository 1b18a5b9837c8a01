"""Declarative profiles (transforms/profiles.py): loading, and the bad input of issue 21.

Every case runs the real loader and the real DuckDB ingestion over small files written here.
"""

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from opencity.errors import ConfigError, DataQualityError
from opencity.secrets import Secret
from transforms.ingest import ingest_file
from transforms.profiles import get_profile, load_profile, shipped_profiles

KEY = Secret("p" * 32, "test")
HEADER = "id,opened,kind,state,hood,lat,lon,addr\n"
ROWS = [
    "1,2025-01-06 10:00:00,Pothole,Open,Back Bay,42.35,-71.08,1 Main St",
    "2,2025-01-06 11:00:00,Street Light Out,Closed,Dorchester,42.30,-71.06,2 Main St",
    "3,2025-01-07 09:30:00,Pothole,Closed,Dorchester,42.31,-71.06,3 Main St",
    "4,2025-01-07 12:00:00,Unicorn Sighting,Open,Back Bay,42.35,-71.08,4 Main St",
]


def write_city(tmp: Path, profile_extra: str = "", rows=ROWS, timestamp=None,
               district="district: {column: district_id}\n",
               map_district=True) -> Path:
    (tmp / "ref").mkdir(exist_ok=True)
    (tmp / "ref" / "categories.csv").write_text(
        "id,name\npothole,Potholes\nstreetlight,Street lights\nother,Other requests\n")
    (tmp / "ref" / "districts.csv").write_text(
        "id,name\nback-bay,Back Bay\ndorchester,Dorchester\n")
    (tmp / "raw.csv").write_text(HEADER + "\n".join(rows) + "\n")
    ts = timestamp or {"format": "%Y-%m-%d %H:%M:%S", "timezone": "America/New_York"}
    prof = tmp / "city-311.yaml"
    prof.write_text(
        "source: service_requests\n"
        "columns:\n  request_id: id\n  created_at: opened\n  request_type: kind\n"
        "  status: state\n  lat: lat\n  lon: lon\n  requester_address: addr\n"
        + ("  district_id: hood\n" if map_district else "")
        + f"timestamp: {json.dumps(ts)}\n"
        "value_maps:\n"
        "  status: {Open: open, Closed: closed}\n"
        "  request_type: {Pothole: pothole, Street Light Out: streetlight}\n"
        + ("  district_id: {Back Bay: back-bay, Dorchester: dorchester}\n"
           if map_district else "")
        + "personal: {requester_address: pseudonymize}\n"
        + district
        + "categories: ref/categories.csv\ndistricts: ref/districts.csv\n"
        + profile_extra)
    return prof


def ingest(tmp: Path, prof: Path):
    return ingest_file("service_requests", tmp / "raw.csv", tmp / "clean",
                       quarantine_dir=tmp / "q", key=KEY, profile=str(prof))


def test_shipped_profiles_load_by_name():
    assert {"baltimore-311", "nyc-311", "boston-311"} <= set(shipped_profiles())
    p = get_profile("service_requests", "baltimore-311")
    assert p.timezone == "America/New_York"
    assert len(p.district_ids) == 14 and "council-7" in p.district_ids
    assert "SW-Dirty Alley" in p.category_ids
    with pytest.raises(ConfigError, match="reads 'service_requests' files, not 'cdr'"):
        get_profile("cdr", "nyc-311")


def test_clean_rows_use_reference_ids_and_utc(tmp_path):
    res = ingest(tmp_path, write_city(tmp_path))
    assert (res.rows_in, res.rows_out, res.rows_quarantined) == (4, 3, 1)
    clean = pq.read_table(res.clean_path).to_pylist()
    assert {r["request_type"] for r in clean} == {"pothole", "streetlight"}
    assert {r["district_id"] for r in clean} == {"back-bay", "dorchester"}
    # 10:00 in Boston (EST, UTC-5) is 15:00 UTC
    assert min(r["created_at"] for r in clean).hour == 15
    assert "requester_address" not in pq.read_table(res.clean_path).column_names


def test_unmapped_values_are_quarantined_with_column_and_share(tmp_path):
    res = ingest(tmp_path, write_city(tmp_path))
    assert res.unmapped == {"request_type": 0.25}
    assert res.reasons == {
        "request_type: raw value not in value_maps.request_type of profile city-311": 1}
    q = pq.read_table(res.quarantine_path).to_pylist()
    assert q[0]["request_type"] == "[withheld]"  # the raw value never reaches the quarantine
    assert res.rows_in == res.rows_out + res.rows_quarantined


def test_profile_mapping_a_missing_column_names_file_and_key(tmp_path):
    prof = write_city(tmp_path)
    prof.write_text(prof.read_text().replace("  lon: lon\n", "  lon: longitude\n"))
    with pytest.raises(DataQualityError) as err:
        ingest(tmp_path, prof)
    msg = str(err.value)
    assert "columns.lon (longitude)" in msg and str(prof) in msg
    assert "Traceback" not in msg


def test_timestamp_format_matching_nothing_quarantines_with_reason(tmp_path):
    prof = write_city(tmp_path, timestamp={"format": "%m/%d/%Y %I:%M %p",
                                           "timezone": "America/New_York"})
    res = ingest(tmp_path, prof)
    assert res.rows_out == 0 and res.rows_quarantined == 4
    assert all("created_at: does not match timestamp.format of profile city-311" in r
               for r in res.reasons)


@pytest.mark.parametrize(("ts", "match"), [
    ({"format": "%Y-%m-%d", "timezone": "Mars/Olympus_Mons"}, "unknown time zone"),
    ({"format": "YYYY-MM-DD", "timezone": "UTC"}, "has no % directive"),
    ({"format": 42, "timezone": "UTC"}, "timestamp.format must be"),
])
def test_bad_timestamp_config_is_a_config_error(tmp_path, ts, match):
    prof = write_city(tmp_path, timestamp=ts)
    with pytest.raises(ConfigError, match=match) as err:
        load_profile(prof)
    assert str(prof) in str(err.value) and "timestamp." in str(err.value)


def test_district_outside_the_reference_list_is_quarantined(tmp_path):
    prof = write_city(tmp_path, rows=[ROWS[0], ROWS[1].replace("Dorchester", "Atlantis")])
    prof.write_text(prof.read_text().replace("Dorchester: dorchester}",
                                             "Dorchester: dorchester, Atlantis: atlantis}"))
    res = ingest(tmp_path, prof)
    assert res.rows_out == 1
    assert res.reasons == {"district_id: value outside its domain (not in the districts file "
                           "districts.csv of profile city-311)": 1}


@pytest.mark.parametrize(("extra", "match"), [
    ("units: {requester: requester_email}\n", "units.requester"),
    ("wat: 1\n", "unknown key"),
    ("bbox: {lat_min: 1}\n", "bbox needs"),
])
def test_bad_keys_name_the_key(tmp_path, extra, match):
    prof = write_city(tmp_path, profile_extra=extra)
    with pytest.raises(ConfigError, match=match) as err:
        load_profile(prof)
    assert str(prof) in str(err.value)


def test_identifier_must_be_declared_personal(tmp_path):
    prof = write_city(tmp_path)
    prof.write_text(prof.read_text().replace("personal: {requester_address: pseudonymize}\n",
                                             ""))
    with pytest.raises(ConfigError, match="personal: the identifier column"):
        load_profile(prof)


def _square(x0, y0, x1, y1):
    return {"type": "Polygon", "coordinates": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1],
                                                [x0, y0]]]}


def _geojson(path: Path, squares: dict[str, tuple]) -> None:
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"code": k, "label": k.title()},
         "geometry": _square(*v)} for k, v in squares.items()]}))


def test_district_polygons_give_the_district(tmp_path):
    _geojson(tmp_path / "d.geojson", {"back-bay": (-71.10, 42.34, -71.07, 42.36),
                                      "dorchester": (-71.07, 42.28, -71.03, 42.32)})
    prof = write_city(tmp_path, map_district=False, district=(
        "district: {polygons: d.geojson, id_property: code, name_property: label}\n"))
    res = ingest(tmp_path, prof)
    clean = pq.read_table(res.clean_path).to_pylist()
    assert sorted(r["district_id"] for r in clean) == ["back-bay", "dorchester", "dorchester"]


def test_point_outside_every_polygon_is_quarantined(tmp_path):
    _geojson(tmp_path / "d.geojson", {"back-bay": (-71.10, 42.34, -71.07, 42.36),
                                      "dorchester": (-71.07, 42.28, -71.03, 42.32)})
    prof = write_city(tmp_path, rows=[ROWS[0], ROWS[1].replace("42.30", "42.20")],
                      map_district=False, district=(
                          "district: {polygons: d.geojson, id_property: code}\n"))
    res = ingest(tmp_path, prof)
    assert res.rows_out == 1
    assert res.reasons == {"district_id: the point lies in no district polygon": 1}


def test_overlapping_polygons_are_a_config_error_naming_both(tmp_path):
    _geojson(tmp_path / "d.geojson", {"north": (0, 0, 2, 2), "south": (1, 1, 3, 3),
                                      "east": (5, 5, 6, 6)})
    prof = write_city(tmp_path, map_district=False, district=(
        "district: {polygons: d.geojson, id_property: code}\n"))
    with pytest.raises(ConfigError) as err:
        load_profile(prof)
    msg = str(err.value)
    assert "'north' and 'south'" in msg and "overlap" in msg and str(prof) in msg


def test_touching_polygons_are_fine(tmp_path):
    _geojson(tmp_path / "d.geojson", {"north": (0, 0, 1, 1), "south": (1, 0, 2, 1)})
    prof = write_city(tmp_path, map_district=False, district=(
        "district: {polygons: d.geojson, id_property: code}\n"))
    prof.write_text(prof.read_text().replace("districts: ref/districts.csv\n", ""))
    assert load_profile(prof).district_ids == ("north", "south")
