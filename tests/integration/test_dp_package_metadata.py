"""The weekly DP 311 package as a run publishes it (the pipeline's own table and release, the
local catalog): `frictionless validate` passes, every column is described as the data
dictionary says for the release's privacy method, and the package states the mechanism,
the privacy unit and the post-processing with its effect on sums (CKAN extras and notes,
datapackage.json)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from catalog_checks import frictionless_errors, undescribed_columns

from opencity.io import write_statement
from opencity.pipelines.service_requests import (
    DATASET,
    WeeklyDPConfig,
    dp_weekly_table,
    release_for,
)
from opencity.release import Committed
from opencity.settings import Settings
from publish.frictionless import STATEMENT_KEYS, describe_column, privacy_statement
from publish.local import LocalCatalog

pytestmark = [pytest.mark.integration]

WEEK = datetime(2026, 10, 5, tzinfo=UTC)
DISTRICTS = pa.table({"district_id": ["D01", "D02", "D03"]})


def _clean(n: int) -> pa.Table:
    rows = [{"request_id": f"R{i}", "requester_pid": f"P{i % 17}",
             "district_id": ("D01", "D02")[i % 2], "request_type": "pothole",
             "created_at": WEEK, "closed_at": WEEK + timedelta(hours=2 + i % 50)}
            for i in range(n)]
    return pa.Table.from_pylist(rows, schema=pa.schema([
        ("request_id", pa.string()), ("requester_pid", pa.string()),
        ("district_id", pa.string()), ("request_type", pa.string()),
        ("created_at", pa.timestamp("us", tz="UTC")),
        ("closed_at", pa.timestamp("us", tz="UTC"))]))


@pytest.fixture(scope="module")
def catalog(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("dp-package")
    settings = Settings(run_dir=str(tmp / "run"))
    table, statement = dp_weekly_table(_clean(60), DISTRICTS, WEEK, WeeklyDPConfig(epsilon=0.6),
                                       seed=1, random_state=11)
    out = settings.layout.output(DATASET, WEEK)
    out.mkdir(parents=True)
    pq.write_table(table, out / "part-0.parquet")
    write_statement(statement, out / "privacy.json")
    csv = settings.layout.csv(DATASET, WEEK)
    csv.mkdir(parents=True, exist_ok=True)
    pacsv.write_csv(table, csv / "part-0.csv")
    committed = Committed(DATASET, "dt=2026-10-05", output_dir=str(out))
    release = release_for(settings, committed, WEEK, WEEK + timedelta(weeks=1),
                          {"pipeline_version": "test", "run_id": "test__2026-10-05"})
    LocalCatalog(tmp / "catalog").publish(release)
    return tmp / "catalog"


def test_frictionless_validate_passes_and_every_column_is_described(catalog):
    assert frictionless_errors(catalog) == {DATASET: []}
    assert not undescribed_columns(catalog)


def test_descriptions_come_from_the_dictionary_and_match_the_table(catalog):
    dp = json.loads((catalog / DATASET / "datapackage.json").read_text())
    tables = [r for r in dp["resources"] if r.get("type") == "table"]
    assert tables
    names = set()
    for res in tables:
        for field in res["schema"]["fields"]:
            names.add(field["name"])
            want = describe_column(DATASET, field["name"], method="differential_privacy")
            assert field["description"] == " ".join(want["description"].split())
            assert field.get("unit") == want.get("unit")
            # nothing is withheld in the DP table, so no column may say it is
            assert "empty when withheld" not in field["description"]
    assert {"requests_noise_std", "requests_unfloored",
            "median_resolution_hours_noise_std"} <= names
    package = json.loads((catalog / DATASET / "package.json").read_text())
    for f in package.get("fields", []):  # the release's own fields, as every target sees them
        want = describe_column(DATASET, f["name"], method="differential_privacy")
        assert f["description"] == " ".join(want["description"].split())


def test_package_states_mechanism_unit_and_post_processing(catalog):
    want = privacy_statement(DATASET, "differential_privacy")
    assert set(want) == set(STATEMENT_KEYS)
    assert "floored at 0" in want["post_processing"]
    assert "requests_unfloored" in want["effect_on_sums"]
    dp = json.loads((catalog / DATASET / "datapackage.json").read_text())
    assert dp["privacy_statement"] == want
    package = json.loads((catalog / DATASET / "package.json").read_text())
    extras = {e["key"]: e["value"] for e in package["extras"]}
    assert extras["privacy_mechanism"] == want["mechanism"]
    assert extras["privacy_unit_statement"] == want["privacy_unit"]
    assert extras["post_processing"] == want["post_processing"]
    assert extras["post_processing_effect_on_sums"] == want["effect_on_sums"]
    assert "Post-processing: " in package["notes"] and "Effect on sums: " in package["notes"]


def test_frictionless_validate_fails_on_a_changed_file(catalog, tmp_path):
    import shutil

    copy = tmp_path / "catalog"
    shutil.copytree(catalog, copy)
    dp = json.loads((copy / DATASET / "datapackage.json").read_text())
    csv = copy / DATASET / next(r["path"] for r in dp["resources"] if r["format"] == "csv")
    csv.write_text(csv.read_text().replace("D01", "D09", 1))
    errors = frictionless_errors(copy)[DATASET]
    assert errors and any("hash" in str(e) for e in errors), errors
