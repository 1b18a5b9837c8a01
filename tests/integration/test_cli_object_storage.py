"""Issue 23 item 3 (command line): ``opencity report|budget|approvals`` read a run directory
on object storage (``s3://...``, the production layout of several workers) as they read a
local one. Before, each said "run directory s3:/opencity-runs/city does not exist".

A real run (``opencity kpi run`` on sample data: outputs, catalog, reports, ledger spends)
is uploaded to moto's S3 server (tests/conftest.py ``s3_server``) with the run's state
pointer; the commands must answer the same from the store as from the local folder."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from datetime import date
from pathlib import Path

import fsspec
import pytest

from opencity.cli import main
from opencity.runstore import push

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _read_dirs() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob("opencity-read-*")}


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    from sample_data import generate

    base = tmp_path_factory.mktemp("cli-s3")
    run = base / "run"
    generate(run / "raw", seed=7, scale=0.2, start=date(2026, 10, 1), days=10, progress=False)
    assert main(["kpi", "run", "--run-dir", str(run), "--month", "2026-10"]) == 0
    # The run keeps a pointer to its state (as the demo does): the module's state DB, where
    # the KPI run spent; a default elsewhere would show nothing.
    (run / "state.url").write_text(os.environ["OPENCITY_STATE_URL"])
    return run


def test_report_budget_approvals_accept_s3_run_directories(local_run, s3_env, tmp_path,
                                                           capsys):
    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    url = f"{s3_env}/opencity-runs/city"
    # Uploaded as a task pushes its scratch copy: files naming the run name the store. A run
    # on object storage publishes to CKAN: no local catalog (its links) goes to the store.
    run = tmp_path / "run"
    shutil.copytree(local_run, run, ignore=shutil.ignore_patterns("catalog"))
    push(run, url, {}, [(str(local_run), url)])
    local_run = run
    assert fs.exists(f"{url}/state.url")
    capsys.readouterr()

    assert main(["budget", str(local_run), "--json"]) == 0
    local_budget = json.loads(capsys.readouterr().out)
    assert main(["budget", url, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == local_budget
    assert local_budget["units"], "the KPI run spent budget"

    assert main(["approvals", str(local_run), "--json"]) == 0
    local_approvals = json.loads(capsys.readouterr().out)
    assert main(["approvals", url + "/", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == local_approvals

    before = _read_dirs()
    assert main(["report", str(local_run), "--out", str(tmp_path / "local")]) == 0
    assert main(["report", url, "--out", str(tmp_path / "s3")]) == 0
    printed = capsys.readouterr().out
    assert "does not exist" not in printed
    assert _read_dirs() == before, "the temporary copy of the run was left behind"
    local_files = sorted(p.relative_to(tmp_path / "local").as_posix()
                         for p in (tmp_path / "local").rglob("*") if p.is_file())
    s3_files = sorted(p.relative_to(tmp_path / "s3").as_posix()
                      for p in (tmp_path / "s3").rglob("*") if p.is_file())
    assert s3_files == local_files and any(f.startswith("releases/") for f in s3_files)
    portal_local = json.loads((tmp_path / "local" / "portal.json").read_text())
    portal_s3 = json.loads((tmp_path / "s3" / "portal.json").read_text())
    assert [d["name"] for d in portal_s3["datasets"]] == [
        d["name"] for d in portal_local["datasets"]]
    for p in (tmp_path / "s3").rglob("*"):
        if p.is_file() and p.suffix in (".json", ".html"):
            text = p.read_text()
            assert "opencity-read-" not in text, f"{p.name} names the temporary copy"
            assert str(local_run) not in text and "file://s3:" not in text


def test_a_missing_s3_run_directory_is_named(s3_env, tmp_path, capsys):
    url = f"{s3_env}/no-such-run"
    assert main(["report", url, "--out", str(tmp_path / "o")]) == 1
    assert main(["budget", url]) == 1
    err = capsys.readouterr().err
    assert err.count(f"run directory {url} does not exist") == 2
    assert "Traceback" not in err
