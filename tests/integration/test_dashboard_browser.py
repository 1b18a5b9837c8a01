"""The dashboard renders its charts in headless Chromium, offline, with no console errors."""

from __future__ import annotations

import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest

from kpi.compute import KPI_SCHEMA
from kpi.dashboard import render_dashboard
from kpi.registry import load_registry

pytestmark = [pytest.mark.integration, pytest.mark.browser]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]


def _table(period: str, shift: float) -> pa.Table:
    reg = load_registry()
    rows = []
    for i, k in enumerate(reg.kpis):
        for area in ("city", "D01", "D02", "D03"):
            method = k.privacy.treatment if k.privacy.treatment == "public" else "dp"
            if area == "D03" and method == "dp":
                method = "suppressed"
            rows.append({
                "kpi_code": k.code, "kpi_name": k.name, "fgssc_dimension": k.fgssc_dimension,
                "u4ssc_dimension": k.u4ssc_dimension, "area": area, "period": period,
                "value": None if method == "suppressed" else 10.0 + i + shift,
                "unit": k.unit, "method": method,
                "error_bound": None if method == "suppressed" else (
                    0.0 if method == "public" else 2.0),
                "source_datasets": ",".join(k.source_datasets),
                "computed_at": datetime(2026, 11, 1, tzinfo=UTC),
            })
    return pa.Table.from_pylist(rows, schema=KPI_SCHEMA)


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    return subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
         "--virtual-time-budget=3000", *args],
        capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y "
                    "--no-install-recommends chromium; scripts/test installs it in CI)")
def test_dashboard_renders_in_headless_chromium(tmp_path):
    history = pa.concat_tables([_table("2026-08", 0.0), _table("2026-09", 1.0)])
    html = render_dashboard(_table("2026-10", 2.0), history, load_registry(), "Test city")
    page = tmp_path / "dashboard.html"
    page.write_text(html, encoding="utf-8")
    assert "https://" not in html and "<script src" not in html and "<link" not in html

    dom = _chromium(tmp_path, "--dump-dom", page.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert 'id="selfcheck"' in dom.stdout and 'data-status="ok"' in dom.stdout, \
        "the page's own self-check did not pass"
    n_kpis = len(load_registry().kpis)
    assert dom.stdout.count('class="chart"') >= n_kpis  # a trend chart per KPI at least
    assert "2026-08" in dom.stdout  # the trend reads earlier periods
    console = [line for line in dom.stderr.splitlines() if "CONSOLE" in line]
    assert not [line for line in console if "error" in line.lower()], console

    shot = tmp_path / "dashboard.png"
    res = _chromium(tmp_path, "--window-size=1280,2000", f"--screenshot={shot}", page.as_uri())
    assert res.returncode == 0, res.stderr[-2000:]
    assert shot.stat().st_size > 10_000
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
