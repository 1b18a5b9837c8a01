"""`opencity budget RUN_DIR [--json]` after real releases: the totals per person equal the
sum of the listed releases and stay within the policy caps; the account is shared across
datasets (mobility + KPI spend the same subscriber account)."""

from __future__ import annotations

import json
import math
from datetime import date

import pytest
import yaml

from opencity.cli import main
from opencity.errors import PrivacyBudgetError

pytestmark = [pytest.mark.integration]
DAYS = ("2026-10-05", "2026-10-06", "2026-10-07")
UNIT_KEYS = {"unit", "period", "spent_epsilon", "spent_delta", "cap_epsilon", "cap_delta",
             "releases"}


def _mobility(raw, day, out, *extra):
    return main(["mobility", str(raw / "cdr"), "--towers", str(raw / "city" / "towers.csv"),
                 "--date", day, "--out", str(out), "--quiet", *extra])


def _budget(run_dir, capsys, *extra):
    capsys.readouterr()
    assert main(["budget", str(run_dir), *extra]) == 0
    return capsys.readouterr().out


def test_budget_after_real_mobility_and_kpi_releases(sample_raw, tmp_path, monkeypatch,
                                                     capsys):
    from privacy.dp import Ledger

    state = tmp_path / "state.sqlite"
    monkeypatch.setenv("OPENCITY_STATE_URL", str(state))
    from opencity.review.testing import approve_policy

    approve_policy(str(state))  # a fresh portal whose officer approved the policy
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    assert "nothing released yet" in _budget(run_dir, capsys)
    for day in DAYS:
        assert _mobility(sample_raw, day, tmp_path / "out" / day) == 0
    ledger = Ledger(state)
    kpi = ledger.policy.dataset("opencity-kpis")
    ledger.spend("opencity-kpis", "dt=2026-10-01", "kpis-2026-10", date(2026, 10, 1),
                 dict(kpi.spend))  # the KPI release spends for all four units at once

    report = json.loads(_budget(run_dir, capsys, "--json"))
    assert set(report) == {"units", "non_dp_releases"}
    assert report["non_dp_releases"] == []  # mobility and KPI spends only: all DP
    units = {(u["unit"], u["period"]): u for u in report["units"]}
    assert set(units) == {(u, "2026-10") for u in ("subscriber", "household", "card",
                                                    "requester")}
    for u in report["units"]:
        assert set(u) == UNIT_KEYS
        assert all(set(r) == {"dataset", "partition", "epsilon", "delta", "status"}
                   for r in u["releases"])
        assert "rejected" not in {r["status"] for r in u["releases"]}
        assert u["spent_epsilon"] == pytest.approx(math.fsum(r["epsilon"] for r in u["releases"]))
        assert u["spent_delta"] == pytest.approx(math.fsum(r["delta"] for r in u["releases"]))
        assert u["spent_epsilon"] <= u["cap_epsilon"] and u["spent_delta"] <= u["cap_delta"]
    sub = units[("subscriber", "2026-10")]
    assert [r["partition"] for r in sub["releases"]] == [f"dt={d}" for d in DAYS] + [
        "dt=2026-10-01"]
    assert {r["dataset"] for r in sub["releases"]} == {"opencity-cdr-mobility-daily",
                                                       "opencity-kpis"}
    assert sub["spent_epsilon"] == pytest.approx(4.0) and sub["cap_epsilon"] == 32.0

    table = _budget(run_dir, capsys)
    assert "subscriber" in table and "2026-10" in table and "opencity-kpis" in table

    # A run that keeps its own state names it in RUN_DIR/state.url.
    own = tmp_path / "own"
    own.mkdir()
    (own / "state.url").write_text(str(tmp_path / "other.sqlite") + "\n")
    assert json.loads(_budget(own, capsys, "--json")) == {"units": []}


def test_per_person_total_across_datasets_is_capped(sample_raw, tmp_path, monkeypatch):
    """Issue 10: the ledger kept one key per dataset (cdr_mobility, opencity-kpi/subscriber)
    each capped on its own, so a subscriber's total was never capped. With a policy whose
    subscriber month holds 3.5, three mobility days (3.0) leave no room for the KPI's 1.0:
    the KPI release is refused for every unit (atomic), nothing is spent."""
    from privacy.dp import Ledger
    from privacy.policy import DEFAULT_POLICY

    doc = yaml.safe_load(DEFAULT_POLICY.read_text())
    doc["units"]["subscriber"]["epsilon"] = 3.5
    (tmp_path / "policy.yaml").write_text(yaml.safe_dump(doc))
    monkeypatch.setenv("OPENCITY_POLICY", str(tmp_path / "policy.yaml"))
    state = tmp_path / "state.sqlite"
    monkeypatch.setenv("OPENCITY_STATE_URL", str(state))
    from opencity.review.testing import approve_policy

    approve_policy(str(state))  # a portal whose officer approved this (tighter) policy
    for day in DAYS:
        assert _mobility(sample_raw, day, tmp_path / day) == 0
    ledger = Ledger(state)
    costs = dict(ledger.policy.dataset("opencity-kpis").spend)
    with pytest.raises(PrivacyBudgetError) as err:
        ledger.release("opencity-kpis", "dt=2026-10-01", date(2026, 10, 1), costs,
                       lambda: pytest.fail("computed although over the cap"),
                       release_id="kpis-2026-10")
    msg = str(err.value)
    assert "'subscriber', period 2026-10" in msg and "remaining epsilon=0.5" in msg
    assert ledger.spent("household", date(2026, 10, 1)) == (0.0, 0.0)
    assert ledger.spent("subscriber", date(2026, 10, 1))[0] == pytest.approx(3.0)
    # and the mobility CLI itself stops at the person's cap too
    assert _mobility(sample_raw, "2026-10-08", tmp_path / "d4") == 1
    assert ledger.spent("subscriber", date(2026, 10, 1))[0] == pytest.approx(3.0)
