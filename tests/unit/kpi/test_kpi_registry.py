"""The KPI registry loads, covers the required dimensions and fails clearly on bad input."""

from __future__ import annotations

import copy
import math

import pytest
import yaml

from kpi.registry import DEFAULT_REGISTRY, load_registry, parse_registry
from opencity.errors import ConfigError


@pytest.fixture()
def doc() -> dict:
    return yaml.safe_load(DEFAULT_REGISTRY.read_text())


def test_packaged_registry_has_ten_codes_in_four_dimensions():
    reg = load_registry()
    assert len({k.code for k in reg.kpis}) >= 10
    assert len({k.fgssc_dimension for k in reg.kpis}) >= 4
    assert reg.kpi("EC: ICT: ES: 1C").code_status == "verified"
    assert all(k.privacy.unit for k in reg.kpis if k.privacy.treatment == "dp")
    for unit, spent in reg.spend_by_unit().items():
        assert spent <= reg.privacy_units[unit].epsilon + 1e-9


def _mutated(doc: dict, index: int, **changes) -> dict:
    out = copy.deepcopy(doc)
    for key, value in changes.items():
        if value is ...:
            out["kpis"][index].pop(key)
        else:
            out["kpis"][index][key] = value
    return out


def test_unknown_source_dataset_is_named(doc):
    from transforms.schemas import SCHEMAS

    bad = _mutated(doc, 2, source_datasets=["meter_registry", "parking_sensors"])
    with pytest.raises(ConfigError, match=r"KPI #3 .*unknown source dataset.*parking_sensors"):
        parse_registry(bad, "reg.yaml", sources=SCHEMAS)
    parse_registry(doc, "reg.yaml", sources=SCHEMAS)  # every packaged KPI names known ones


def test_orchestration_passes_the_canonical_sources_and_checks_them(tmp_path, capsys):
    """The registry the KPI pipeline and `opencity kpi check` load is checked against the
    canonical sources (kpi.registry imports no stage; opencity.pipelines.kpi passes them)."""
    from opencity.pipelines.kpi import KPI_SOURCES
    from transforms.schemas import SCHEMAS

    assert KPI_SOURCES == frozenset(SCHEMAS)
    doc = yaml.safe_load(DEFAULT_REGISTRY.read_text())
    doc["kpis"][0]["source_datasets"] = ["parking_sensors"]
    bad = tmp_path / "reg.yaml"
    bad.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError, match="unknown source dataset.*parking_sensors"):
        load_registry(bad, sources=KPI_SOURCES)
    from opencity import cli

    assert cli.main(["kpi", "check", "--registry", str(bad)]) == 1
    assert "parking_sensors" in capsys.readouterr().err


@pytest.mark.parametrize("bad", [[""], [3], "cdr"])
def test_source_names_are_checked_even_without_the_canonical_list(doc, bad):
    with pytest.raises(ConfigError, match="source"):
        parse_registry(_mutated(doc, 2, source_datasets=bad), "reg.yaml")


def test_missing_unit_is_named(doc):
    bad = _mutated(doc, 0, unit=...)
    with pytest.raises(ConfigError, match=r"reg\.yaml: KPI #1 \('EC: ICT: ES: 1C'\): missing "
                                          r"required field 'unit'"):
        parse_registry(bad, "reg.yaml")


def test_duplicate_code_is_named(doc):
    bad = _mutated(doc, 4, code=doc["kpis"][0]["code"])
    with pytest.raises(ConfigError, match=r"KPI #5 .*duplicate code 'EC: ICT: ES: 1C' \(first "
                                          r"used by KPI #1\)"):
        parse_registry(bad, "reg.yaml")


@pytest.mark.parametrize("share", [0, -0.1, 1.5, math.nan, math.inf, "a lot", True])
def test_bad_epsilon_share(doc, share):
    bad = copy.deepcopy(doc)
    bad["kpis"][3]["privacy"]["epsilon_share"] = share
    with pytest.raises(ConfigError, match="epsilon_share"):
        parse_registry(bad, "reg.yaml")


def test_shares_of_one_unit_cannot_exceed_its_cap(doc):
    bad = copy.deepcopy(doc)
    for k in bad["kpis"]:
        if k["privacy"].get("unit") == "household":
            k["privacy"]["epsilon_share"] = 0.5
    with pytest.raises(ConfigError, match=r"privacy unit 'household'.*add up to 1\.5"):
        parse_registry(bad, "reg.yaml")


def test_undeclared_privacy_unit_and_wrong_dimension(doc):
    bad = copy.deepcopy(doc)
    bad["kpis"][3]["privacy"]["unit"] = "person"
    with pytest.raises(ConfigError, match="privacy unit 'person' is not declared"):
        parse_registry(bad, "reg.yaml")
    with pytest.raises(ConfigError, match="fgssc_dimension must be one of"):
        parse_registry(_mutated(doc, 0, fgssc_dimension="D7"), "reg.yaml")


def test_public_computation_cannot_be_declared_dp(doc):
    bad = copy.deepcopy(doc)
    bad["kpis"][0]["privacy"] = {"treatment": "dp", "unit": "household", "epsilon_share": 0.01}
    with pytest.raises(ConfigError, match="is a 'public' computation"):
        parse_registry(bad, "reg.yaml")


def test_unreadable_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read the KPI registry"):
        load_registry(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("kpis: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_registry(broken)
