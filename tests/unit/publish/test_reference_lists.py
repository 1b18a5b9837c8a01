"""Reference datasets from a profile's reference lists (districts without boxes)."""

from publish.reference import DISTRICTS, REQUEST_TYPES, reference_tables


def test_districts_without_boxes_and_request_types(tmp_path):
    (tmp_path / "districts.csv").write_text(
        "district_id,name\nbrooklyn,Brooklyn\nbronx,Bronx\n")
    (tmp_path / "request_types.csv").write_text("request_type,name\nnoise,Noise\n")
    tables = reference_tables(tmp_path)
    d = tables[DISTRICTS].to_pylist()
    assert [(r["district_id"], r["district_name"]) for r in d] == [("bronx", "Bronx"),
                                                                    ("brooklyn", "Brooklyn")]
    assert all(r["lat_min"] is None and r["lon_max"] is None for r in d)
    assert tables[REQUEST_TYPES].to_pylist() == [{"request_type": "noise",
                                                  "request_type_name": "Noise"}]
