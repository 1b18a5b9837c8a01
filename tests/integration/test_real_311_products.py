"""Issue 21 item 6 on the real 311 extracts (tests/data/311_*): no extract has requester
age, gender or identity, and the products must not depend on them.

* The microdata is released with the quasi-identifiers the input provides (district x
  day/week x status, request type sensitive); age and gender are dropped and the statement
  says so. An independent recount over the PUBLISHED file: every class over every published
  non-sensitive column holds at least k units (here every request is its own unit: the
  clean rows carry no requester pseudonym) and at least l request types.
* The microdata suite is generated from what is published and the profile's code lists: it
  passes on the real release and still fails on a real violation (a class below k, a
  request type outside the city's list).
"""

from __future__ import annotations

import csv
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from transforms.profiles import get_profile
from transforms.schemas import SCHEMAS

pytestmark = [pytest.mark.integration, pytest.mark.slow]  # ~15 s a city (GX)

DATA = Path(__file__).resolve().parents[1] / "data"
MICRODATA = "opencity-311-requests-microdata"
# Busiest week of each extract (Monday, UTC).
CITIES = {
    "baltimore-311": ("311_baltimore/311_sample.csv", datetime(2015, 2, 16, tzinfo=UTC)),
    "boston-311": ("311_boston_sample/boston_311.csv", datetime(2025, 1, 6, tzinfo=UTC)),
}


def _districts_csv(path: Path, profile_name: str) -> None:
    """The profile's district list as a reference table; the boxes split the profile's city
    box into strips (non-overlapping; the district itself comes from the data column)."""
    from transforms.profiles import get_profile

    profile = get_profile("service_requests", profile_name)
    ids = profile.domain("district_id")
    b = profile.bbox
    width = (b.lon_max - b.lon_min) / len(ids)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["district_id", "name", "population", "households", "lat_min", "lat_max",
                    "lon_min", "lon_max"])
        for i, d in enumerate(ids):
            lo = b.lon_min + i * width
            w.writerow([d, d, 1000, 400, b.lat_min, b.lat_max, round(lo, 6),
                        round(lo + width - 1e-6, 6)])


@pytest.fixture(scope="module", params=sorted(CITIES))
def released(request, tmp_path_factory):
    from opencity.pipelines import microdata_311 as m
    from opencity.pipelines import service_requests as p
    from opencity.settings import Settings

    profile = request.param
    rel, start = CITIES[profile]
    end = start + timedelta(weeks=1)
    root = tmp_path_factory.mktemp(profile)
    raw = root / "raw"
    _districts_csv(raw / "city" / "districts.csv", profile)
    extract = raw / "extract.csv"
    extract.write_bytes((DATA / rel).read_bytes())
    extract.chmod(0o600)
    settings = Settings(run_dir=str(root / "run"), raw_dir=str(raw))
    ingested = p.ingest(settings, start, end, profile=profile, raw_path=str(extract))
    staged = m.anonymize_partition(settings, ingested, start, end)
    published = m.commit_and_publish(settings, staged, start, end, "real-311",
                                     ingested["input_hashes"])
    return {"settings": settings, "profile": profile, "start": start, "ingested": ingested,
            "staged": staged, "published": published}


def test_microdata_uses_the_quasi_identifiers_the_city_provides(released):
    staged, published = released["staged"], released["published"]
    assert staged["released"] and published["published"], staged.get("reason")
    assert staged["quasi_identifiers"] == ["district_id", "created", "status"]
    assert staged["quasi_identifiers_dropped"] == ["age", "gender"]
    records = pq.read_table(Path(published["output_dir"]) / "part-0.parquet")
    assert records.column_names == ["district_id", "created", "status", "request_type"]
    assert records.num_rows > 0
    # The statement (catalog metadata) says which QIs were used and which the city lacks.
    import json

    pkg = json.loads((Path(released["settings"].run_dir) / "catalog" / MICRODATA /
                      "package.json").read_text())
    text = json.dumps(pkg)
    assert '"quasi_identifiers_not_provided": ["age", "gender"]' in text
    assert "does not provide them: age, gender" in text
    assert "age band" not in text


def test_recount_of_the_published_file_over_units(released):
    """k over units, l over request types, recounted independently on the published file."""
    staged, published = released["staged"], released["published"]
    clean = pq.read_table(released["ingested"]["clean_path"])
    # No requester identity in a real extract: every request is its own unit, so the
    # units of a class are its records.
    assert clean["requester_pid"].null_count == clean.num_rows
    assert pc.count_distinct(clean["request_id"]).as_py() == clean.num_rows
    records = pq.read_table(Path(published["output_dir"]) / "part-0.parquet")
    qis = [c for c in records.column_names if c != "request_type"]
    classes = records.group_by(qis).aggregate([([], "count_all"),
                                               ("request_type", "count_distinct")])
    assert min(classes["count_all"].to_pylist()) >= staged["k"] == 5
    assert min(classes["request_type_count_distinct"].to_pylist()) >= staged["l"] == 2
    # Nothing beyond the suppression limit was removed.
    assert records.num_rows >= (1 - staged["suppression_limit"]) * staged["rows_in"] - 1


def _validate(released, table: pa.Table, tmp_path: Path) -> dict:
    from expectations.gate import validate_or_raise

    staged = released["staged"]
    return validate_or_raise(
        MICRODATA, table, reports_dir=tmp_path,
        context={"schema": SCHEMAS["service_requests"],
                 "privacy": {"kind": "microdata",
                             "quasi_identifiers": [c for c in table.column_names
                                                   if c != "request_type"],
                             "k": staged["k"], "domains": staged["domains"]}})


def test_generated_suite_passes_on_real_data_and_fails_on_a_real_violation(released,
                                                                           tmp_path):
    from opencity.errors import DataQualityError

    records = pq.read_table(Path(released["published"]["output_dir"]) / "part-0.parquet")
    summary = _validate(released, records, tmp_path / "ok")
    assert summary["success"]
    # One real request of the week added back ungeneralized (its own district and day, a
    # combination the release generalized away): its class holds one unit (below k).
    clean = pq.read_table(released["ingested"]["clean_path"]).to_pylist()
    real = next(r for r in clean if r["district_id"] is not None)
    row = {"district_id": real["district_id"], "created": f"{real['created_at']:%Y-%m-%d}",
           "status": real["status"], "request_type": real["request_type"]}
    assert row not in records.select(list(row)).to_pylist()
    lone = pa.concat_tables([records, pa.Table.from_pylist([row], schema=records.schema)])
    with pytest.raises(DataQualityError, match="equivalence_classes_to_have_at_least_k"):
        _validate(released, lone, tmp_path / "k")
    # A request type of the synthetic city, not in this city's list.
    foreign = records.set_column(
        records.column_names.index("request_type"), "request_type",
        pa.array(["pothole"] + records["request_type"].to_pylist()[1:]))
    with pytest.raises(DataQualityError, match="request_type"):
        _validate(released, foreign, tmp_path / "domain")


def test_clean_suite_passes_without_demographics_and_fails_on_a_real_violation(released,
                                                                             tmp_path):
    """The clean partition's suite (schema + the city's profile) passed at ingest on a city
    without age or gender, and still stops a real violation: a request id seen twice."""
    from expectations.gate import validate_or_raise
    from opencity.errors import DataQualityError

    ingested = released["ingested"]
    assert ingested["validation"]["success"]
    clean = pq.read_table(ingested["clean_path"])
    assert clean["requester_age"].null_count == clean["requester_gender"].null_count \
        == clean.num_rows
    twice = pa.concat_tables([clean, clean.slice(0, 1)])
    start = released["start"]
    with pytest.raises(DataQualityError, match="request_id"):
        validate_or_raise("service_requests", twice, reports_dir=tmp_path,
                          context={"schema": SCHEMAS["service_requests"],
                                   "interval": (start, start + timedelta(weeks=1)),
                                   "profile": get_profile("service_requests",
                                                      released["profile"])})


def test_guard_refusal_because_of_the_other_product_says_so(released):
    """When the weekly table is refused because of the microdata already published for the
    week (here: a microdata file with a class below k), the error names that release."""
    from opencity.errors import GuardError
    from opencity.pipelines import service_requests as p

    records = pq.read_table(Path(released["published"]["output_dir"]) / "part-0.parquet")
    lone = pa.concat_tables([records, pa.Table.from_pylist(
        [{"district_id": "x-1", "created": "2000-01-01", "status": "open",
          "request_type": records["request_type"][0].as_py()}], schema=records.schema)])
    with pytest.raises(GuardError, match="together with opencity-311-requests-microdata"):
        p.guard_period(released["settings"], released["start"], weekly=None, microdata=lone,
                       new_dataset=p.DATASET)
