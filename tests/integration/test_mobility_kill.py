"""Issue 23 item 7: ``opencity mobility`` killed right after its spend never leaves output
files without their privacy.json, and the rerun completes the release without a new spend
and exits 0. Real command in a subprocess, SIGKILL as soon as its staging folder appears."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from test_mobility_cli import DAY, _cdr, _towers

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PRODUCTS = {"hourly_presence.parquet", "od_matrix.parquet", "home_region.parquet",
            "gyration.parquet"}


def _cmd(cdr, towers, out, ledger):
    return [sys.executable, "-m", "opencity.cli", "mobility", str(cdr), "--towers",
            str(towers), "--date", DAY, "--out", str(out), "--ledger", str(ledger),
            "--epsilon", "1", "--quiet"]


def test_kill_after_the_spend_then_rerun(tmp_path):
    from privacy.dp import Ledger

    towers, cells = _towers(tmp_path)
    cdr, _ = _cdr(tmp_path, cells)
    out, ledger = tmp_path / "release", tmp_path / "state.sqlite"
    from opencity.review.testing import approve_policy

    approve_policy(str(ledger))  # the portal's officer approved the stored policy
    proc = subprocess.Popen(_cmd(cdr, towers, out, ledger), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    # kill at the first sign of writing: a staging folder, or a first file in OUT (which,
    # written file by file, used to show products without their privacy.json)
    while proc.poll() is None and not any(tmp_path.glob(".release.*.tmp")) and not (
            out.is_dir() and any(out.iterdir())):
        assert time.monotonic() < deadline, "the command never staged its release"
        time.sleep(0.001)
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    names = {p.name for p in out.iterdir()} if out.exists() else set()
    assert not (names & PRODUCTS) or {"privacy.json"} | PRODUCTS <= names, sorted(names)
    spent = Ledger(ledger).recorded_spend("opencity-cdr-mobility-daily", f"dt={DAY}")
    assert spent == (1.0, 0.0), "the spend committed before the kill"

    rerun = subprocess.run(_cmd(cdr, towers, out, ledger), capture_output=True, text=True,
                           timeout=300, check=False)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "already recorded" in rerun.stdout
    assert {"privacy.json"} | PRODUCTS <= {p.name for p in out.iterdir()}
    assert Ledger(ledger).recorded_spend("opencity-cdr-mobility-daily",
                                         f"dt={DAY}") == (1.0, 0.0), "no second spend"
    # a killed run's staging folder (.release.<id>.tmp) may remain: publish.leftovers
    # removes it; it is never read as the release
