"""Issue 21 item 6: a KPI whose source the city did not register is published as "not
available (source X is not registered)" (no value, no budget spent), the dashboard says so,
and the run does not fail; the KPI registry can be pointed elsewhere.

The monthly task bodies of dags/opencity_kpi.py run for real (ingest, compute, dashboard,
commit, publish) on the sample city's October with only some sources in its raw folder.
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

import pyarrow.parquet as pq
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]  # ~40 s: a month of sources
START, END = datetime(2026, 10, 1, tzinfo=UTC), datetime(2026, 11, 1, tzinfo=UTC)
# The city registers its 311 requests and its meters; no transit, waste or CDR source.
REGISTERED = {"service_requests": "service_requests/requests.csv", "meter_registry": "meters/registry.csv",
              "meter_readings": "meters/readings"}


@pytest.fixture(scope="module")
def run(sample_raw, tmp_path_factory):
    from opencity.pipelines import kpi as p
    from opencity.settings import Settings

    root = tmp_path_factory.mktemp("kpi-partial")
    raw = root / "raw"
    shutil.copytree(sample_raw / "city", raw / "city")
    for rel in REGISTERED.values():
        src, dst = sample_raw / rel, raw / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, dst)
    settings = Settings(run_dir=str(root / "run"), raw_dir=str(raw))
    ingested = p.ingest(settings, START, END)
    # What the registry-driven ingest hands on (source registry, issue 21 item 1): the sources
    # it read; a source that is not registered is neither read nor "missing".
    assert set(ingested["sources"]) == set(REGISTERED)
    ingested["missing"] = []
    staged = p.compute(settings, ingested, START, END, random_state=7)
    rendered = p.dashboard(settings, staged, START)
    committed = p.commit_partition(settings, staged, START)
    published = p.publish(settings, committed, staged, START, END, "kpi-partial", ingested)
    return {"settings": settings, "staged": staged, "rendered": rendered,
            "committed": committed, "published": published}


def test_kpis_of_unregistered_sources_are_published_as_not_available(run):
    from kpi.registry import load_registry

    registry = load_registry()
    table = pq.read_table(Path(run["committed"]["output_dir"]) / "kpis.parquet")
    rows = table.to_pylist()
    by_code = {}
    for r in rows:
        by_code.setdefault(r["kpi_code"], []).append(r)
    assert set(by_code) == {k.code for k in registry.kpis}  # every KPI has its rows
    unavailable = run["staged"]["not_available"]
    for kpi in registry.kpis:
        missing = [s for s in kpi.source_datasets if s in ("transit_stops", "transit_taps",
                                                           "waste_pickups", "cdr")]
        if missing:
            assert unavailable[kpi.code] == f"not available (source {missing[0]} is not " \
                                            "registered)"
            assert all(r["value"] is None and r["error_bound"] is None
                       and r["method"] == "suppressed"
                       and r["withheld_reason"] == unavailable[kpi.code]
                       for r in by_code[kpi.code])
        else:
            assert kpi.code not in unavailable
    # The KPIs of the registered sources are computed as usual.
    assert any(r["value"] is not None for r in rows if r["source_datasets"] == "meter_registry")
    assert run["published"]["target"] == "local"


def test_unavailable_kpis_spend_nothing(run):
    spent = {e["privacy_unit"] for e in run["staged"]["ledger"]}
    assert spent == {"household", "requester"}  # no card or subscriber KPI was computed


def test_dashboard_says_which_source_is_missing(run):
    html = (Path(run["committed"]["output_dir"]) / "dashboard.html").read_text()
    assert "not available (source transit_taps is not registered)" in html
    assert "not available (source cdr is not registered)" in html


def test_the_kpi_registry_can_be_pointed_elsewhere(tmp_path, monkeypatch):
    from kpi.registry import DEFAULT_REGISTRY, load_registry
    from opencity.errors import ConfigError

    text = DEFAULT_REGISTRY.read_text().replace("name: Smart electricity meters",
                                                "name: Compteurs intelligents")
    city = tmp_path / "kpi_registry.yaml"
    city.write_text(text)
    monkeypatch.setenv("OPENCITY_KPI_REGISTRY", str(city))
    assert load_registry().kpi("EC: ICT: ES: 1C").name == "Compteurs intelligents"
    assert load_registry().path == str(city)
    monkeypatch.setenv("OPENCITY_KPI_REGISTRY", str(tmp_path / "nope.yaml"))
    with pytest.raises(ConfigError, match="OPENCITY_KPI_REGISTRY"):
        load_registry()


def test_run_config_dir_passes_the_city_kpi_registry(tmp_path):
    from opencity.errors import ConfigError
    from opencity.run import _env, config_files
    from opencity.source_registry import DEFAULT_FILE

    (tmp_path / "sources.yaml").write_text(DEFAULT_FILE.read_text())
    assert "kpi_registry" not in config_files(tmp_path)
    (tmp_path / "kpi_registry.yaml").write_text("version: 1\nkpis: nope\n")
    with pytest.raises(ConfigError, match="kpi_registry.yaml"):
        config_files(tmp_path)  # a broken city registry is refused before any run
    from kpi.registry import DEFAULT_REGISTRY

    (tmp_path / "kpi_registry.yaml").write_text(DEFAULT_REGISTRY.read_text())
    files = config_files(tmp_path)
    env = _env(files, tmp_path / "run", tmp_path / "raw")
    assert env["OPENCITY_KPI_REGISTRY"] == str(tmp_path / "kpi_registry.yaml")
