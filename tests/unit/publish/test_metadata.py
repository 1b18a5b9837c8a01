"""publish/metadata.py: the one release -> CKAN package mapping (pure, no server)."""

from __future__ import annotations

import json

import pytest

from opencity.errors import ConfigError
from opencity.settings import Settings
from publish import metadata as md
from publish.base import DatasetRelease, Resource


def _release(tmp_path, **kw) -> DatasetRelease:
    f = tmp_path / "part-0.parquet"
    f.write_bytes(b"PAR1")
    base = {"name": "kpi-x", "title": "KPI", "description": "d",
                "resources": (Resource(f, "kpi", "parquet", "week", "dt=2026-10-05"),),
                "privacy": {"privacy_method": "k_anonymity", "k_anonymity_k": 5,
                         "quasi_identifiers": ["age_band"]},
                "tags": ("311", "kpi"), "temporal_coverage": ("2026-10-05", "2026-10-12"),
                "spatial_coverage": "Sample city", "accrual_periodicity": "R/P1W",
                "license_id": "CC-BY-4.0", "provenance": {"pipeline_version": "0.1.0"}}
    base.update(kw)
    return DatasetRelease(**base)


def extras(pkg):
    return {e["key"]: e["value"] for e in pkg["extras"]}


def test_package_carries_dcat_ap_fields_as_authority_iris(tmp_path):
    pkg = md.package_dict(_release(tmp_path), md.CatalogInfo())
    ex = extras(pkg)
    assert pkg["license_id"] == "cc-by"
    assert ex["frequency"] == "http://publications.europa.eu/resource/authority/frequency/WEEKLY"
    assert json.loads(ex["theme"]) == [
        "http://publications.europa.eu/resource/authority/data-theme/GOVE",
        "http://publications.europa.eu/resource/authority/data-theme/REGI"]
    assert ex["temporal_start"] == "2026-10-05" and ex["temporal_end"] == "2026-10-11"
    assert ex["publisher_name"] and ex["contact_email"].count("@") == 1
    assert ex["k_anonymity_k"] == "5"
    assert "k (every published" in ex["privacy dt=2026-10-05"]
    assert [e["key"] for e in pkg["extras"]] == sorted(e["key"] for e in pkg["extras"])


def test_resource_has_hex_hash_and_spdx_algorithm(tmp_path):
    rel = _release(tmp_path)
    res = md.resource_dict(rel, rel.resources[0], "ab" * 32, size=4)
    assert res["hash"] == "ab" * 32
    assert res["hash_algorithm"] == "http://spdx.org/rdf/terms#checksumAlgorithm_sha256"
    assert res["format"].endswith("/file-type/PARQUET")
    assert res["license"].endswith("/licence/CC_BY_4_0")
    assert res["opencity_key"] == "kpi-x/dt=2026-10-05/kpi"
    with pytest.raises(ConfigError, match="64 lowercase hex"):
        md.resource_dict(rel, rel.resources[0], "sha256:" + "ab" * 32)


def test_previous_package_widens_coverage_and_keeps_partitions(tmp_path):
    first = md.package_dict(_release(tmp_path))
    first["extras"].append({"key": "opencity_release_state", "value": "published"})
    later = _release(tmp_path, temporal_coverage=("2026-10-12", "2026-10-19"),
                     privacy={"privacy_method": "differential_privacy", "epsilon": 1.0},
                     resources=(Resource(tmp_path / "part-0.parquet", "kpi", "parquet", "w",
                                         "dt=2026-10-12"),))
    ex = extras(md.package_dict(later, previous=first))
    assert ex["temporal_start"] == "2026-10-05" and ex["temporal_end"] == "2026-10-18"
    assert "privacy dt=2026-10-05" in ex and "epsilon: 1.0" in ex["privacy dt=2026-10-12"]
    assert "k_anonymity_k" not in ex and "quasi_identifiers" not in ex  # stale method keys
    assert ex["opencity_release_state"] == "published"


def test_same_input_gives_the_same_dict(tmp_path):
    rel = _release(tmp_path)
    assert md.package_dict(rel) == md.package_dict(rel)


@pytest.mark.parametrize("kw,match", [({"license_id": "proprietary"}, "licence"),
                                      ({"accrual_periodicity": "R/P5D"}, "periodicity")])
def test_unknown_vocabulary_values_are_config_errors(tmp_path, kw, match):
    with pytest.raises(ConfigError, match=match):
        md.package_dict(_release(tmp_path, **kw))


def test_catalog_info_from_settings_and_validation(monkeypatch):
    monkeypatch.setenv("OPENCITY_CONTACT_EMAIL", "data@city.example")
    info = md.CatalogInfo.from_settings(Settings.resolve())
    assert info.contact_email == "data@city.example"
    with pytest.raises(ConfigError, match="e-mail"):
        md.CatalogInfo(contact_email="nobody")
    with pytest.raises(ConfigError, match="IRI"):
        md.CatalogInfo(publisher_uri="opencity.example.org")
