"""One state DB location for the CLI and the DAGs, from settings; never inside run_dir."""

from __future__ import annotations

from pathlib import Path

from opencity.settings import Settings


def test_state_url_default_is_shared_and_not_in_the_run_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("OPENCITY_STATE_URL", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    a = Settings.resolve({"run_dir": str(tmp_path / "run-a")})
    b = Settings.resolve({"run_dir": str(tmp_path / "run-b")})
    assert a.state_url == b.state_url == str(tmp_path / "xdg" / "opencity" / "state.sqlite")
    assert Path(a.run_dir) not in Path(a.state_url).parents
    monkeypatch.setenv("OPENCITY_STATE_URL", "postgresql://opencity:pw@127.0.0.1/state")
    s = Settings.resolve({"run_dir": str(tmp_path / "run-a")})
    assert s.state_url.startswith("postgresql://") and "pw" not in repr(s)


def test_state_url_is_not_a_dag_param():
    from opencity.airflow_context import SETTINGS_PARAMS

    assert "state_url" not in SETTINGS_PARAMS
