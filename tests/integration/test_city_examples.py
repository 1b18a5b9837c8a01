"""The city examples (examples/<city>/): configuration only, over the real 311 extracts.

Each example's registry and profile load, its profile ingests the city's real extract with the
counts reconciled and every published code inside the city's reference lists, and Boston runs
end to end through ``opencity run opencity_311 --config examples/boston``.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from opencity.secrets import Secret
from opencity.source_registry import load_sources
from transforms.ingest import ingest_file
from transforms.profiles import get_profile

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
DATA = ROOT / "tests" / "data"
KEY = Secret("e" * 32, "test")
pytestmark = [pytest.mark.integration]

# city -> (extract, rows in, clean, quarantined): measured on the extracts in tests/data.
CITIES = {
    "baltimore": ("311_baltimore/311_sample.csv", 10_000, 10_000, 0),
    "nyc": ("311_nyc_sample/nyc311.csv", 1_000, 1_000, 0),
    "boston": ("311_boston_sample/boston_311.csv", 2_424, 2_424, 0),
}


def _profile(city: str):
    src = load_sources(EXAMPLES / city / "sources.yaml")["service_requests"]
    return src, get_profile("service_requests", src.profile)


@pytest.mark.parametrize("city", sorted(CITIES))
def test_example_is_complete_configuration(city):
    folder = EXAMPLES / city
    for name in ("sources.yaml", "policy.yaml", "README.md", "reference/districts.csv",
                 "reference/categories.csv"):
        assert (folder / name).is_file(), name
    src, prof = _profile(city)
    assert src.dag == "opencity_311" and Path(src.profile).is_relative_to(folder)
    assert Path(src.path).name == Path(CITIES[city][0]).name  # relative to the raw folder
    assert 10 <= len(prof.categories) <= 25
    assert any(i == "other" for i, _ in prof.categories) or city == "boston"
    mapped = set(prof.value_maps["request_type"].values())
    assert mapped <= set(prof.category_ids)
    assert all(name and name != i for i, name in prof.districts)  # real names, not codes
    assert prof.units == {}  # no requester identity in any extract: event-level unit
    policy = (folder / "policy.yaml").read_text()
    assert "requester" not in policy.replace("no requester identity", "")


@pytest.mark.parametrize("city", sorted(CITIES))
def test_example_profile_ingests_the_real_extract(city, tmp_path):
    extract, rows_in, clean_rows, quarantined = CITIES[city]
    _, prof = _profile(city)
    res = ingest_file("service_requests", DATA / extract, tmp_path / "c",
                      quarantine_dir=tmp_path / "q", key=KEY, profile=prof)
    assert (res.rows_in, res.rows_out, res.rows_quarantined) == (rows_in, clean_rows,
                                                                quarantined)
    assert res.rows_in == res.rows_out + res.rows_quarantined + res.rows_other_intervals
    assert res.unmapped == {}  # every raw request type and district of the extract is mapped
    clean = pq.read_table(res.clean_path)
    assert set(clean["request_type"].to_pylist()) <= set(prof.category_ids)
    assert set(clean["district_id"].drop_null().to_pylist()) <= set(prof.district_ids)
    assert "requester_address" not in clean.column_names
    if city == "baltimore":  # coordinates not read: the placeholder (39, -77) loses nothing
        assert "lat" not in prof.columns and clean["lat"].null_count == clean.num_rows


def test_a_new_request_type_is_quarantined_with_its_share(tmp_path):
    """A type the city has not mapped yet: quarantined, column named, share reported."""
    _, prof = _profile("boston")
    src = DATA / "311_boston_sample" / "boston_311.csv"
    with src.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh))
    col = rows[0].index("type")
    for row in rows[1:101]:
        row[col] = "Rat Bite"
    raw = tmp_path / "boston.csv"
    with raw.open("w", encoding="utf-8", newline="") as fh:
        csv.writer(fh).writerows(rows)
    res = ingest_file("service_requests", raw, tmp_path / "c", quarantine_dir=tmp_path / "q",
                      key=KEY, profile=prof)
    assert res.rows_quarantined == 100
    assert res.unmapped == {"request_type": round(100 / 2_424, 6)}
    assert res.reasons == {"request_type: raw value not in value_maps.request_type of "
                           "profile boston-311": 100}


def _policy_loads(path: Path) -> str:
    from opencity.errors import ConfigError
    from privacy.policy import load_policy

    try:
        load_policy(path)
    except ConfigError as err:
        return str(err)
    return ""


@pytest.mark.slow
@pytest.mark.airflow
def test_boston_runs_end_to_end_from_its_configuration(tmp_path, monkeypatch):
    """Two weeks of Boston's real extract through the real DAG, configured only by
    examples/boston: weekly partitions in the catalog, district and category names
    published as reference datasets."""
    config = EXAMPLES / "boston"
    refused = _policy_loads(config / "policy.yaml")
    assert not refused, refused
    from opencity.review.testing import approve_policy

    state = tmp_path / "state.db"
    monkeypatch.setenv("OPENCITY_STATE_URL", str(state))
    monkeypatch.setenv("OPENCITY_POLICY", str(config / "policy.yaml"))
    approve_policy(str(state))
    raw = tmp_path / "raw"
    raw.mkdir()
    shutil.copy(DATA / "311_boston_sample" / "boston_311.csv", raw / "boston_311.csv")
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "opencity.cli", "run", "opencity_311", "--config", str(config),
         "--raw", str(raw), "--out", str(out), "--from", "2025-01-06", "--to", "2025-01-20"],
        check=False, capture_output=True, text=True, timeout=900, env=dict(os.environ))
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    summary = json.loads((out / "run-opencity_311-2025-01-06-2025-01-20.json").read_text())
    assert [r["state"] for r in summary["intervals"]] == ["success", "success"]
    for r in summary["intervals"]:
        assert f"opencity-311-requests-weekly/dt={r['start']}" in r["published"]
    names = {}
    for dataset, column in (("opencity-districts", "district_name"),
                            ("opencity-request-types", "request_type_name")):
        table = pq.read_table(next((out / "catalog" / dataset / "data").rglob("*.parquet")))
        names[dataset] = set(table[column].to_pylist())
    assert "Dorchester" in names["opencity-districts"]
    assert "Street lights" in names["opencity-request-types"]
    # The city's event-level unit is the one stated, never a requester it did not bound.
    for statement in (out / "catalog" / "opencity-311-requests-weekly").rglob("privacy.json"):
        body = json.loads(statement.read_text())
        assert body["privacy_unit"] == "request"
        assert body["privacy_unit_level"] == "event"


@pytest.mark.slow
@pytest.mark.airflow
def test_a_range_before_the_registry_start_date_is_refused(tmp_path):
    """The DAG's start date is the city registry's (2019-12-30 for NYC), not a code date."""
    config = tmp_path / "nyc"  # NYC's registry, profile and reference (the shipped policy)
    config.mkdir()
    shutil.copy(EXAMPLES / "nyc" / "sources.yaml", config)
    for sub in ("profiles", "reference"):
        shutil.copytree(EXAMPLES / "nyc" / sub, config / sub)
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "opencity.cli", "run", "opencity_311", "--config",
         str(config), "--raw", str(tmp_path), "--out", str(out),
         "--from", "2019-12-23", "--to", "2020-01-06"],
        check=False, capture_output=True, text=True, timeout=300, env=dict(os.environ))
    assert proc.returncode == 1
    assert "--from 2019-12-23 is before the start date of opencity_311 (2019-12-30" in proc.stderr
    assert "Traceback" not in proc.stderr
