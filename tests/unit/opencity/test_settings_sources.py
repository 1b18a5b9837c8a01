"""Settings resolution through pydantic-settings (issue 19): same variables, defaults,
precedence and messages as the hand-written resolver it replaced; a bad value is a
ConfigError naming the setting, never a pydantic traceback."""

from __future__ import annotations

from dataclasses import fields

import pytest

from opencity.errors import ConfigError
from opencity.settings import Settings


@pytest.fixture(autouse=True)
def _no_opencity_env(monkeypatch):
    for f in fields(Settings):
        if f.name != "state_url":
            monkeypatch.delenv(f"OPENCITY_{f.name.upper()}", raising=False)


@pytest.mark.parametrize("name, env, explicit, expected", [
    ("suppression_k", "20", 30, 30),             # explicit beats the environment
    ("suppression_k", "20", None, 20),           # None explicit: the environment
    ("suppression_k", "20", "", 20),             # '' explicit: the environment
    ("suppression_k", "", None, 15),             # '' in the environment: the default
    ("microdata_max_suppression", "0.01", None, 0.01),
    ("microdata_max_suppression", "0.01", 0.02, 0.02),
    ("ckan_timeout", "7.5", None, 7.5),
    ("seed", "5.0", None, 5),                    # a whole number written as a decimal
    ("city_name", "Gent", None, "Gent"),
    ("city_name", "Gent", "Leuven", "Leuven"),
])
def test_explicit_then_environment_then_default(monkeypatch, name, env, explicit, expected):
    monkeypatch.setenv(f"OPENCITY_{name.upper()}", env)
    s = Settings.resolve({name: explicit})
    assert getattr(s, name) == expected and type(getattr(s, name)) is type(expected)


def test_defaults_equal_the_dataclass_defaults(monkeypatch, tmp_path):
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path))
    assert Settings.resolve() == Settings()
    assert Settings.resolve().run_dir == str(tmp_path / "opencity")


def test_the_variable_is_opencity_and_the_setting_name_in_capitals(monkeypatch):
    monkeypatch.setenv("OPENCITY_MICRODATA_K", "7")
    monkeypatch.setenv("MICRODATA_K", "9")  # no prefix: not ours
    assert Settings.resolve().microdata_k == 7


@pytest.mark.parametrize("name, value, message", [
    ("suppression_k", "abc", "setting suppression_k must be an integer, got 'abc'"),
    ("microdata_k", "2.5", "setting microdata_k must be an integer, got '2.5'"),
    ("seed", "inf", "setting seed must be an integer, got 'inf'"),
    ("ckan_timeout", "soon", "setting ckan_timeout must be a number, got 'soon'"),
    ("ckan_timeout", "nan", "setting ckan_timeout must be a finite number, got 'nan'"),
    ("microdata_max_suppression", "0.5x", "setting microdata_max_suppression must be a number"),
])
def test_a_bad_environment_value_is_a_config_error_naming_the_setting(monkeypatch, capsys,
                                                                      name, value, message):
    monkeypatch.setenv(f"OPENCITY_{name.upper()}", value)
    with pytest.raises(ConfigError) as err:
        Settings.resolve()
    assert str(err.value).startswith(message)
    assert "pydantic" not in str(err.value) and "validation error" not in str(err.value)
    assert err.value.__cause__ is None and err.value.__suppress_context__


def test_a_bad_explicit_value_beats_a_good_environment_value(monkeypatch):
    monkeypatch.setenv("OPENCITY_SUPPRESSION_K", "20")
    with pytest.raises(ConfigError, match="setting suppression_k must be an integer"):
        Settings.resolve({"suppression_k": "twenty"})


def test_range_checks_still_apply_after_resolution(monkeypatch):
    monkeypatch.setenv("OPENCITY_MICRODATA_MAX_SUPPRESSION", "1.5")
    with pytest.raises(ConfigError, match=r"microdata_max_suppression must be in \[0, 1\)"):
        Settings.resolve()


def test_the_cli_reports_a_bad_value_without_a_traceback(monkeypatch, tmp_path, capsys):
    from opencity.cli import main

    monkeypatch.setenv("OPENCITY_CKAN_TIMEOUT", "soon")
    assert main(["publish", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err
    assert "opencity publish: error (ConfigError): setting ckan_timeout must be a number, " \
           "got 'soon'" in err
    assert "Traceback" not in err and "pydantic" not in err
