"""Issue 23 item 9: ``opencity kpi run --run-dir balt`` with a relative run directory.

Before run directories were made absolute, the second month's publish left the first month
out of the local catalog (its files no longer matched their records through the relative
path): the catalog silently held one month instead of two."""

from __future__ import annotations

import json
from datetime import date

import pytest

from opencity.cli import main

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_kpi_run_relative_run_dir_keeps_every_month(tmp_path, monkeypatch):
    from sample_data import generate

    generate(tmp_path / "balt" / "raw", seed=7, scale=0.2, start=date(2026, 9, 24), days=14,
             progress=False)
    monkeypatch.chdir(tmp_path)
    for month in ("2026-09", "2026-10"):
        assert main(["kpi", "run", "--run-dir", "balt", "--month", month]) == 0
    pkg = json.loads((tmp_path / "balt" / "catalog" / "opencity-kpis" / "package.json")
                     .read_text())
    assert sorted({r["partition"] for r in pkg["resources"]}) == ["dt=2026-09-01",
                                                                  "dt=2026-10-01"]
    for r in pkg["resources"]:
        assert (tmp_path / "balt" / "catalog" / "opencity-kpis" / r["path"]).is_file()
