"""The source registry (opencity/source_registry.py): profiles, consumer DAGs, start dates."""

from datetime import UTC, date, datetime

import pytest

from opencity.errors import ConfigError
from opencity.source_registry import for_source, load_sources, require_source, start_of

ENTRY = "    path: requests.csv\n    schedule: '0 0 * * 1'\n    start_date: 2019-12-30\n"


def test_shipped_registry_names_every_source_once():
    sources = load_sources()
    kinds = sorted(s.kind for s in sources.values())
    assert kinds == sorted({"service_requests", "cdr", "meter_readings", "meter_registry",
                            "transit_stops", "transit_taps", "waste_pickups"})
    assert sources["cdr_events"].kind == "cdr" and sources["cdr_events"].dag == "cdr_mobility"


def test_profile_path_is_relative_to_the_registry(tmp_path):
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "city.yaml").write_text("source: service_requests\n")
    f = tmp_path / "sources.yaml"
    f.write_text("sources:\n  service_requests:\n" + ENTRY
                 + "    profile: profiles/city.yaml\n    dag: opencity_311\n")
    src = require_source("service_requests", f)
    assert src.profile == str(tmp_path / "profiles" / "city.yaml")
    assert src.start_date == date(2019, 12, 30)
    assert for_source("cdr", f) is None


@pytest.mark.parametrize(("extra", "match"), [
    ("    profile: profiles/missing.yaml\n", r"\.profile: no profile file .*missing\.yaml"),
    ("    dag: opencity_312\n", r"\.dag must be one of opencity_311"),
])
def test_registry_errors_name_file_and_key(tmp_path, extra, match):
    f = tmp_path / "sources.yaml"
    f.write_text("sources:\n  service_requests:\n" + ENTRY + extra)
    with pytest.raises(ConfigError, match=match) as err:
        load_sources(f)
    assert str(f) in str(err.value)


def test_missing_source_is_a_clear_error(tmp_path, monkeypatch):
    f = tmp_path / "sources.yaml"
    f.write_text("sources:\n  waste_pickups:\n" + ENTRY)
    monkeypatch.setenv("OPENCITY_SOURCES_FILE", str(f))
    with pytest.raises(ConfigError, match="has no 'service_requests' source"):
        require_source("service_requests")
    assert start_of("service_requests") is None
    assert start_of(month=True) == datetime(2019, 12, 1, tzinfo=UTC)
