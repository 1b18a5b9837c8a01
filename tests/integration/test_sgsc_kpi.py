"""Issue 21 (done when): the SGSC smart-meter readings reach the KPI table through their
profile.

A city configuration (tests/integration/sgsc_city/) registers only ``meter_readings`` (the real
SGSC slice, shipped profile ``sgsc-meters``: half-hourly kWh, Australia/Sydney local time) and
``meter_registry`` (a constructed registry of the slice's customers, read through a
test-config YAML profile). The monthly task bodies of dags/opencity_kpi.py run for real
(ingest, compute, dashboard, commit, publish) for January 2013.
"""

from __future__ import annotations

import csv
import math
import shutil
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

import pyarrow.parquet as pq
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]  # ~20 s: two monthly runs
DATA = Path(__file__).parents[1] / "data" / "smartmeter_sgsc"
CITY = Path(__file__).with_name("sgsc_city")
START, END = datetime(2013, 1, 1, tzinfo=UTC), datetime(2013, 2, 1, tzinfo=UTC)
ELECTRICITY_PER_CAPITA = "EN: EN: E: 2C"
SMART_ELECTRICITY = "EC: ICT: ES: 1C"


def _run_month(root: Path, kpi_registry: Path | None = None) -> dict:
    """The KPI task bodies for January 2013 on a fresh raw folder and portal state."""
    from opencity.pipelines import kpi as p
    from opencity.review.testing import approve_policy
    from opencity.settings import Settings

    raw = root / "raw"
    (raw / "city").mkdir(parents=True)
    (raw / "meters").mkdir()
    shutil.copy2(DATA / "sgsc_districts.csv", raw / "city" / "districts.csv")
    shutil.copy2(DATA / "sgsc_meter_registry.csv", raw / "meters" / "registry.csv")
    shutil.copy2(DATA / "sgsc_readings.csv", raw / "meters" / "sgsc_readings.csv")
    for f in (raw / "meters").iterdir():
        f.chmod(0o600)  # restricted inputs, as a city's landing area keeps them
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OPENCITY_SOURCES_FILE", str(CITY / "sources.yaml"))
        mp.setenv("OPENCITY_STATE_URL", str(root / "state.sqlite"))  # own ledger per run
        approve_policy(str(root / "state.sqlite"))
        if kpi_registry is not None:
            mp.setenv("OPENCITY_KPI_REGISTRY", str(kpi_registry))
        settings = Settings(run_dir=str(root / "run"), raw_dir=str(raw))
        ingested = p.ingest(settings, START, END)
        staged = p.compute(settings, ingested, START, END, random_state=7)
        rendered = p.dashboard(settings, staged, START)
        committed = p.commit_partition(settings, staged, START)
        published = p.publish(settings, committed, staged, START, END, "kpi-sgsc", ingested)
    return {"ingested": ingested, "staged": staged, "rendered": rendered,
            "committed": committed, "published": published}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The shipped KPI registry."""
    return _run_month(tmp_path_factory.mktemp("kpi-sgsc"))


@pytest.fixture(scope="module")
def trial(tmp_path_factory):
    """The trial city's own KPI registry (sgsc_city/kpi_registry.yaml)."""
    return _run_month(tmp_path_factory.mktemp("kpi-sgsc-trial"), CITY / "kpi_registry.yaml")


def _rows(run) -> dict[str, list[dict]]:
    table = pq.read_table(Path(run["committed"]["output_dir"]) / "kpis.parquet")
    by_code: dict[str, list[dict]] = defaultdict(list)
    for r in table.to_pylist():
        by_code[r["kpi_code"]].append(r)
    return by_code


def true_per_capita(upper: float) -> float:
    """Independent recount from the raw files: per household, kWh of the month / local days
    with readings / members, clamped to [0, upper]; the mean over households."""
    members = {r["meter_id"]: int(r["members"])
               for r in csv.DictReader((DATA / "sgsc_meter_registry.csv").open())}
    kwh: dict[str, float] = defaultdict(float)
    days: dict[str, set] = defaultdict(set)
    for r in csv.DictReader((DATA / "sgsc_readings.csv").open()):
        kwh[r["customer_id"]] += float(r["general_supply_kwh"])
        days[r["customer_id"]].add(r["reading_datetime"][:10])  # local (Sydney) date
    per = [min(max(kwh[m] / len(days[m]) / members[m], 0.0), upper) for m in kwh]
    return sum(per) / len(per)


def test_readings_are_ingested_through_the_profile(run):
    sources = run["ingested"]["sources"]
    assert set(sources) == {"meter_registry", "meter_readings"}
    readings = sources["meter_readings"]
    assert readings["rows_in"] == 2928 and readings["rows_out"] == 2928
    assert readings["rows_quarantined"] == 0
    assert sources["meter_registry"]["rows_out"] == 9
    # Local Sydney times (AEDT, UTC+11 in January) are stored in UTC, values in kWh.
    clean = pq.read_table(readings["clean_path"])
    assert min(clean.column("reading_time").to_pylist()) == datetime(2013, 1, 6, 13, tzinfo=UTC)
    assert set(clean.column("unit").to_pylist()) == {"kWh"}
    assert "customer_id" not in clean.column_names


def test_shipped_registry_withholds_the_electricity_kpi_of_nine_households(run):
    """Nine trial households are fewer than the shipped registry's min_units (15): the row
    is computed from the readings and withheld for that reason, not failed."""
    city = next(r for r in _rows(run)[ELECTRICITY_PER_CAPITA] if r["area"] == "city")
    assert city["source_datasets"] == "meter_registry,meter_readings"
    assert city["method"] == "suppressed" and city["value"] is None
    assert city["withheld_reason"].startswith("fewer than 15 households (noisy count)")


def test_electricity_kpi_value_from_the_sgsc_readings_matches_the_truth(trial):
    """With the trial city's registry (local Sydney days, min_units 5, max_relative_error
    1.0) the city value is published and lies within its 95 % error bound of an independent
    recount from the raw files (seeded noise: random_state 7)."""
    from kpi.registry import load_registry

    kpi = load_registry(str(CITY / "kpi_registry.yaml")).kpi(ELECTRICITY_PER_CAPITA)
    rows = _rows(trial)
    assert set(rows) == {SMART_ELECTRICITY, ELECTRICITY_PER_CAPITA}
    city = next(r for r in rows[ELECTRICITY_PER_CAPITA] if r["area"] == "city")
    assert city["source_datasets"] == "meter_registry,meter_readings"
    truth = true_per_capita(float(kpi.params["upper_per_person_day"]))
    print(f"\nSGSC {ELECTRICITY_PER_CAPITA} city 2013-01: true {truth:.4f} kWh/person/day, "
          f"published {city['value']:.4f} +- {city['error_bound']:.4f} ({city['method']})")
    assert city["method"] == "dp", city["withheld_reason"]
    # Nine households at 3.0 epsilon per household and month: the 95 % bound is about the
    # size of the value (the trial registry's max_relative_error 1.0 lets it through).
    assert math.isfinite(city["value"]) and 0 < city["error_bound"] <= city["value"]
    assert abs(city["value"] - truth) <= city["error_bound"]
    # Districts of 2-4 households stay withheld (min_units 5), never published exactly.
    assert all(r["method"] == "suppressed" for r in rows[ELECTRICITY_PER_CAPITA]
               if r["area"] != "city")
    assert {e["privacy_unit"] for e in trial["staged"]["ledger"]} == {"household"}


def test_registry_kpi_is_public_and_other_sources_not_available(run):
    rows = _rows(run)
    smart = next(r for r in rows[SMART_ELECTRICITY] if r["area"] == "city")
    assert smart["method"] == "public" and smart["value"] == 100.0
    unavailable = run["staged"]["not_available"]
    assert unavailable  # transit, waste, 311 and CDR KPIs
    for code, reason in unavailable.items():
        assert reason.startswith("not available (source ")
        assert all(r["value"] is None and r["method"] == "suppressed"
                   and r["withheld_reason"] == reason for r in rows[code])
    assert ELECTRICITY_PER_CAPITA not in unavailable
    assert {e["privacy_unit"] for e in run["staged"]["ledger"]} == {"household"}
    assert run["published"]["target"] == "local"


@pytest.mark.airflow
def test_the_kpi_dag_runs_the_sgsc_month_from_the_city_config(tmp_path):
    """`opencity run opencity_kpi --config sgsc_city` (the real DAG through dag.test(), in a
    subprocess, unseeded noise): the month succeeds and its KPI table carries the SGSC
    electricity row (~40 s)."""
    import json
    import os
    import subprocess
    import sys

    raw = tmp_path / "raw"
    (raw / "city").mkdir(parents=True)
    (raw / "meters").mkdir()
    shutil.copy2(DATA / "sgsc_districts.csv", raw / "city" / "districts.csv")
    shutil.copy2(DATA / "sgsc_meter_registry.csv", raw / "meters" / "registry.csv")
    shutil.copy2(DATA / "sgsc_readings.csv", raw / "meters" / "sgsc_readings.csv")
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "opencity.cli", "run", "opencity_kpi", "--config", str(CITY),
         "--raw", str(raw), "--out", str(out), "--from", "2013-01-01", "--to", "2013-02-01"],
        check=False, capture_output=True, text=True, timeout=600, env=dict(os.environ))
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    summary = json.loads((out / "run-opencity_kpi-2013-01-01-2013-02-01.json").read_text())
    assert [r["state"] for r in summary["intervals"]] == ["success"]
    assert summary["intervals"][0]["published"] == ["opencity-kpis/dt=2013-01-01"]
    table = pq.read_table(out / "outputs" / "opencity-kpis" / "dt=2013-01-01" / "kpis.parquet")
    city = next(r for r in table.to_pylist()
                if r["kpi_code"] == ELECTRICITY_PER_CAPITA and r["area"] == "city")
    assert city["source_datasets"] == "meter_registry,meter_readings"
    if city["method"] == "dp":  # unseeded: the value may also be withheld as too noisy
        assert math.isfinite(city["value"]) and 0 < city["error_bound"] <= city["value"]
    else:
        assert city["method"] == "suppressed" and city["withheld_reason"].startswith("too noisy")
