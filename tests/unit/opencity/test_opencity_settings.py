import pytest

from opencity.errors import ConfigError
from opencity.settings import Settings


def test_resolution_order(monkeypatch, tmp_path):
    monkeypatch.setenv("OPENCITY_RUN_DIR", str(tmp_path / "env"))
    monkeypatch.setenv("OPENCITY_SUPPRESSION_K", "20")
    s = Settings.resolve({"run_dir": str(tmp_path / "explicit"), "suppression_k": None})
    assert s.run_dir == str(tmp_path / "explicit")
    assert s.suppression_k == 20
    assert s.raw_dir == str(tmp_path / "explicit" / "raw")
    monkeypatch.delenv("OPENCITY_SUPPRESSION_K")
    assert Settings.resolve().suppression_k == 15


@pytest.mark.parametrize("k", ["1", "abc", "2.5", "nan", "inf"])
def test_bad_k(monkeypatch, k):
    monkeypatch.setenv("OPENCITY_SUPPRESSION_K", k)
    with pytest.raises(ConfigError, match="suppression_k"):
        Settings.resolve()


def test_ckan_target_needs_url(monkeypatch):
    monkeypatch.delenv("OPENCITY_CKAN_URL", raising=False)
    with pytest.raises(ConfigError, match="OPENCITY_CKAN_URL"):
        Settings.resolve({"publish_target": "ckan"})
    with pytest.raises(ConfigError, match="unknown setting"):
        Settings.resolve({"nope": 1})
