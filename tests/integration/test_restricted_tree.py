"""Issue 23 item 6: restricted means restricted. Under umask 022 (files 0644, folders 0755
by default) a real pipeline run leaves everything that is not published owner-only: csv
copies waiting for approval, validation reports on clean data, ``_runs`` markers,
manifests, outputs; only the published local catalog stays readable by others."""

from __future__ import annotations

import os
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest

from opencity.io import restrict_run_tree

pytestmark = [pytest.mark.integration]

DAGS = Path(__file__).resolve().parents[2] / "dags"


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _open_to_others(root: Path, skip: tuple[str, ...]) -> list[str]:
    """Paths under root (top-level entries in ``skip`` excepted) readable beyond the owner."""
    found = []
    for top in root.iterdir():
        if top.name in skip:
            continue
        for p in [top, *top.rglob("*")]:
            if p.is_symlink():
                continue
            if stat.S_IMODE(p.lstat().st_mode) & 0o077:
                found.append(f"{p.relative_to(root)} {stat.S_IMODE(p.lstat().st_mode):04o}")
    return found


@pytest.mark.airflow
@pytest.mark.slow
def test_a_real_dag_run_under_umask_022_leaves_nothing_unpublished_readable(
        airflow_db, sample_raw, tmp_path, umask_022, monkeypatch):
    from airflow.dag_processing.dagbag import DagBag
    from airflow.sdk import DagRunState

    monkeypatch.delenv("OPENCITY_RESTRICTED_GROUP", raising=False)
    run_dir = tmp_path / "run"
    conf = {"run_dir": str(run_dir), "raw_dir": str(sample_raw)}
    dag = DagBag(dag_folder=str(DAGS / "opencity_311.py")).get_dag("opencity_311")
    dr = dag.test(logical_date=datetime(2026, 10, 12, tzinfo=UTC), run_conf=conf)
    assert dr.state == DagRunState.SUCCESS
    for zone in ("csv", "reports", "_runs", "outputs", "manifests"):
        assert (run_dir / zone).is_dir(), f"the run wrote no {zone}/ (test would prove nothing)"
    assert any((run_dir / "csv").rglob("*.csv"))
    assert _open_to_others(run_dir, skip=("catalog",)) == []
    published = [p for p in (run_dir / "catalog").rglob("*")
                 if p.is_file() and not p.is_symlink()]
    assert published and any(p.stat().st_mode & stat.S_IROTH for p in published), \
        "the published catalog should stay readable (what the portal serves)"


def test_demo_like_tree_airflow_db_and_generated_raw(tmp_path, umask_022, monkeypatch):
    """The demo's own tree: Airflow's home (airflow.db, logs), the generated raw data, the
    state and the review report; with an OPENCITY_RESTRICTED_GROUP the group may read."""
    monkeypatch.delenv("OPENCITY_RESTRICTED_GROUP", raising=False)
    root = tmp_path / "opencity-demo"
    for rel in ("airflow/airflow.db", "airflow/logs/dag_id=x/attempt=1.log",
                "raw/cdr/part-0.parquet", "state/state.sqlite", "review/index.html",
                "csv/opencity-x/dt=2026-10-05/part-0.csv", "_runs/d/r.json",
                "demo-summary.json", "catalog/opencity-x/package.json"):
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("x")
    assert _open_to_others(root, skip=("catalog",))  # 0644/0755 as created
    restrict_run_tree(root)  # a pipeline's run: the landing area is the city's
    left = _open_to_others(root, skip=("catalog",))
    assert left and all(p.startswith("raw") for p in left)
    restrict_run_tree(root, include_inputs=True)  # the demo generated its raw data
    assert _open_to_others(root, skip=("catalog",)) == []
    assert (root / "catalog" / "opencity-x" / "package.json").stat().st_mode & stat.S_IROTH

    monkeypatch.setenv("OPENCITY_RESTRICTED_GROUP", str(os.getgid()))
    restrict_run_tree(root, include_inputs=True)
    assert stat.S_IMODE((root / "airflow" / "airflow.db").stat().st_mode) == 0o640
    assert stat.S_IMODE((root / "airflow").stat().st_mode) == 0o750


@pytest.mark.slow
def test_cli_run_under_umask_022(tmp_path, umask_022, monkeypatch):
    """A command-line run (``opencity kpi run``) leaves the same owner-only tree."""
    from datetime import date

    from opencity.cli import main
    from sample_data import generate

    monkeypatch.delenv("OPENCITY_RESTRICTED_GROUP", raising=False)
    run = tmp_path / "run"
    generate(run / "raw", seed=7, scale=0.2, start=date(2026, 10, 1), days=5, progress=False)
    assert main(["kpi", "run", "--run-dir", str(run), "--month", "2026-10"]) == 0
    assert any((run / "csv").rglob("*.csv")) and (run / "reports").is_dir()
    assert _open_to_others(run, skip=("catalog", "raw")) == []
