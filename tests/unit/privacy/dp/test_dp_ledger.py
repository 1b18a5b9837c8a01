"""The per-person ledger: accounts (unit, period) across datasets, caps from the policy,
atomic multi-unit spends, the release protocol, concurrency; SQLite and real PostgreSQL."""

import json
import math
import multiprocessing as mp
from datetime import date

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from opencity.errors import ConfigError, PrivacyBudgetError
from privacy.dp import DPBudget
from privacy.dp.ledger import Ledger
from privacy.policy import parse_policy

DAY = date(2026, 10, 5)


def small_policy(sub_cap=1.0, sub_delta=1e-6, per_release=1.0, per_delta=1e-6, hh_cap=3.0,
                 cadence="daily"):
    """Subscriber cap per month ``sub_cap``; dataset 'cdr' (subscriber, ``cadence``) and
    'kpi' (monthly, household + subscriber)."""
    cols = {"value": "public"}
    return parse_policy({
        "version": 1,
        "units": {"subscriber": {"period": "month", "epsilon": sub_cap, "delta": sub_delta},
                  "household": {"period": "month", "epsilon": hh_cap, "delta": 0.0}},
        "datasets": {
            "cdr": {"method": "differential_privacy", "unit": "subscriber", "cadence": cadence,
                    "epsilon": per_release, "delta": per_delta, "columns": cols},
            "kpi": {"method": "differential_privacy", "unit": ["household", "subscriber"],
                    "cadence": "monthly", "epsilon": {"household": hh_cap, "subscriber": sub_cap},
                    "delta": {"household": 0.0, "subscriber": 0.0}, "columns": cols},
        },
    }, "test-policy")


def test_spend_then_overspend_names_unit_period_requested_remaining(state_url):
    led = Ledger(state_url, small_policy(sub_cap=1.0, per_release=0.7))
    led.check("cdr", DAY, {"subscriber": DPBudget(0.7)})
    e = led.spend("cdr", "dt=2026-10-05", "r1", DAY, {"subscriber": DPBudget(0.7)}, {"x": 1})
    assert e.newly_spent and e.spends[0].period == "2026-10" and e.epsilon == 0.7
    assert e.policy_hash == led.policy.hash
    with pytest.raises(PrivacyBudgetError) as err:
        led.spend("cdr", "dt=2026-10-06", "r1", date(2026, 10, 6),
                  {"subscriber": DPBudget(0.5)})
    msg = str(err.value)
    for part in ("'subscriber'", "period 2026-10", "requested epsilon=0.5",
                 "remaining epsilon=0.3"):
        assert part in msg
    # Nothing was recorded by the refused spend.
    assert len(led.releases()) == 1
    assert led.remaining("subscriber", DAY) == pytest.approx((0.3, 1e-6))
    # The next month has its own account.
    led.spend("cdr", "dt=2026-11-01", "r1", date(2026, 11, 1), {"subscriber": DPBudget(0.7)})


def test_one_release_per_cadence_step(state_url):
    """A second release id for the same day cannot double the day's loss (the old
    --release-id / --daily-cap loophole), even with month budget left."""
    led = Ledger(state_url, small_policy(sub_cap=30.0, per_release=1.0))
    led.spend("cdr", "dt=2026-10-05", "daily", DAY, {"subscriber": DPBudget(1.0)})
    with pytest.raises(PrivacyBudgetError, match="per subscriber per day"):
        led.spend("cdr", "dt=2026-10-05", "again", DAY, {"subscriber": DPBudget(0.5)})


def test_costs_may_only_tighten_the_policy(state_url):
    led = Ledger(state_url, small_policy(per_release=1.0))
    with pytest.raises(ConfigError, match="at most epsilon=1"):
        led.check("cdr", DAY, {"subscriber": DPBudget(50.0)})
    with pytest.raises(ConfigError, match="does not spend from unit 'household'"):
        led.check("cdr", DAY, {"household": DPBudget(0.1)})
    with pytest.raises(ConfigError, match="no entry in the release policy"):
        led.check("meters", DAY, {"household": DPBudget(0.1)})
    with pytest.raises(ConfigError, match="DPBudget"):
        led.check("cdr", DAY, {"subscriber": 0.1})  # type: ignore[dict-item]
    assert led.releases() == []


def test_delta_is_capped_too(state_url):
    led = Ledger(state_url, small_policy(sub_cap=5.0, sub_delta=1e-6, per_delta=8e-7))
    led.spend("cdr", "p1", "a", DAY, {"subscriber": DPBudget(0.1, 8e-7)})
    with pytest.raises(PrivacyBudgetError, match="delta"):
        led.spend("cdr", "p2", "a", date(2026, 10, 6), {"subscriber": DPBudget(0.1, 8e-7)})


def test_account_is_the_persons_across_datasets(state_url):
    """Mobility + KPI subscriber spends share one account; the KPI's multi-unit spend is
    all or nothing."""
    led = Ledger(state_url, small_policy(sub_cap=1.0, per_release=0.6))
    led.spend("cdr", "dt=2026-10-05", "daily", DAY, {"subscriber": DPBudget(0.6)})
    with pytest.raises(PrivacyBudgetError, match="'subscriber', period 2026-10"):
        led.spend("kpi", "dt=2026-10-01", "kpis", date(2026, 10, 1),
                  {"household": DPBudget(1.0), "subscriber": DPBudget(0.6)})
    # all or nothing: the household account did not move either
    assert led.spent("household", DAY) == (0.0, 0.0)
    rec = led.spend("kpi", "dt=2026-10-01", "kpis", date(2026, 10, 1),
                    {"household": DPBudget(1.0), "subscriber": DPBudget(0.4)})
    assert {s.unit for s in rec.spends} == {"household", "subscriber"}
    acc = {(a["unit"], a["period"]): a for a in led.accounts()}
    sub = acc[("subscriber", "2026-10")]
    assert sub["spent_epsilon"] == pytest.approx(1.0) and sub["cap_epsilon"] == 1.0
    assert [r["dataset"] for r in sub["releases"]] == ["cdr", "kpi"]
    assert sub["spent_epsilon"] == pytest.approx(math.fsum(r["epsilon"]
                                                           for r in sub["releases"]))
    assert acc[("household", "2026-10")]["spent_epsilon"] == 1.0


def test_release_protocol_records_checks_computes_spends_replays(state_url):
    led = Ledger(state_url, small_policy(sub_cap=1.0, per_release=1.0))
    calls = []

    def compute():
        calls.append(1)
        return {"rows": 3}, {"a.parquet": b"\x00PAR1"}

    out = led.release("cdr", "dt=2026-10-05", DAY, {"subscriber": DPBudget(0.9)}, compute,
                      release_id="daily")
    assert not out.reused and out.artifacts == {"a.parquet": b"\x00PAR1"} and calls == [1]
    again = Ledger(state_url, led.policy).release(
        "cdr", "dt=2026-10-05", DAY, {"subscriber": DPBudget(0.9)}, compute,
        release_id="daily")
    assert again.reused and again.artifacts == {"a.parquet": b"\x00PAR1"} and calls == [1]
    assert again.record.id == out.record.id and again.record.release == {"rows": 3}
    assert led.recorded_spend("cdr", "dt=2026-10-05", "daily") == pytest.approx((0.9, 0.0))
    assert led.recorded_spend("cdr", "dt=2026-10-06") is None
    # Over the cap: refused before computing, nothing spent.
    with pytest.raises(PrivacyBudgetError):
        led.release("cdr", "dt=2026-10-06", date(2026, 10, 6), {"subscriber": DPBudget(0.5)},
                    compute, release_id="daily")
    assert calls == [1] and len(led.releases()) == 1


def test_compute_failure_spends_nothing(state_url):
    led = Ledger(state_url, small_policy())

    def boom():
        raise RuntimeError("compute failed")

    with pytest.raises(RuntimeError):
        led.release("cdr", "p", DAY, {"subscriber": DPBudget(0.5)}, boom)
    assert led.releases() == [] and led.spent("subscriber", DAY) == (0.0, 0.0)


def test_old_per_dataset_ledger_is_refused(tmp_path):
    import sqlite3

    old = tmp_path / "privacy_budget.sqlite"
    con = sqlite3.connect(old)
    con.execute("CREATE TABLE ledger_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    con.execute("INSERT INTO ledger_meta VALUES ('schema_version', '1')")
    con.commit()
    con.close()
    with pytest.raises(ConfigError, match="old per-dataset format"):
        Ledger(old, small_policy())


def test_state_url_without_password_in_messages():
    from privacy.dp.ledger import redact_url

    assert redact_url("postgresql://u:secret@h:5/db") == "postgresql://u:***@h:5/db"


spends = st.lists(
    st.tuples(st.floats(min_value=1e-3, max_value=0.6, allow_nan=False),
              st.sampled_from(["r1", "r2", "r3", "r4", "r5", "r6"]),
              st.sampled_from([date(2026, 1, 1), date(2026, 1, 2), date(2026, 2, 1)])),
    min_size=1, max_size=25,
)


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(spends)
def test_property_never_over_cap_and_idempotent(tmp_path_factory, ops):
    path = tmp_path_factory.mktemp("ledger") / "l.sqlite"
    led = Ledger(path, small_policy(sub_cap=1.0, sub_delta=0.0, per_release=1.0, per_delta=0.0,
                                    cadence="monthly"))
    seen: dict[tuple, float] = {}
    for eps, rid, day in ops:
        key = (day, rid)
        try:
            rec = led.spend("cdr", f"dt={day}", rid, day, {"subscriber": DPBudget(eps)})
        except PrivacyBudgetError:
            spent = math.fsum(v for (d, _), v in seen.items() if d.month == day.month)
            assert spent + eps > 1.0  # refused only when it really would go over
            continue
        if key in seen:
            assert not rec.newly_spent and rec.epsilon == seen[key]
        else:
            assert rec.newly_spent
            seen[key] = eps
    for acc in led.accounts():
        assert acc["spent_epsilon"] <= 1.0 + 1e-9
        assert acc["spent_epsilon"] == pytest.approx(math.fsum(r["epsilon"]
                                                               for r in acc["releases"]))


def _worker(args):
    """Spend 0.1 per release, ``n`` releases in a row (KPI releases spend for two units)."""
    url, prefix, n, kpi = args
    led = Ledger(url, small_policy(sub_cap=1.0, sub_delta=0.0, per_release=1.0, per_delta=0.0,
                                   hh_cap=1.0))
    out = []
    for j in range(n):
        rid = f"{prefix}-{j}"
        try:
            if kpi:
                rec = led.spend("kpi", "dt=2026-10-01", rid, DAY,
                                {"household": DPBudget(0.1), "subscriber": DPBudget(0.1)})
            else:
                rec = led.spend("cdr", "dt=2026-10-05", rid, DAY, {"subscriber": DPBudget(0.1)},
                                {"rid": rid})
            out.append(("ok", rid, rec.newly_spent))
        except PrivacyBudgetError:
            out.append(("refused", rid, False))
    return out


def test_concurrent_processes_cannot_double_spend(state_url):
    """Six processes spend the same subscriber account at once, 8 releases each (mobility
    releases for one unit, KPI releases for two): the cap holds exactly, each release id
    counts once, and the KPI's two units move together. (With the write lock removed
    (no BEGIN IMMEDIATE / advisory lock) this test failed on both backends in 1 of 2 runs.)"""
    led = Ledger(state_url, small_policy(sub_cap=1.0, sub_delta=0.0, per_release=1.0,
                                         per_delta=0.0, hh_cap=1.0))
    jobs = ([(state_url, f"m{i}", 8, False) for i in range(4)] + [(state_url, "m0", 8, False)]
            + [(state_url, f"k{i}", 8, True) for i in range(2)])
    # spawn, not fork: forking a pytest process that already runs DuckDB/Airflow threads can
    # deadlock the child. The timeout keeps a hang from stalling CI.
    ctx = mp.get_context("spawn")
    with ctx.Pool(4) as pool:
        results = [r for rs in pool.map_async(_worker, jobs).get(timeout=300) for r in rs]
    sub = [a for a in led.accounts() if a["unit"] == "subscriber"]
    assert len(sub) == 1
    assert sub[0]["spent_epsilon"] == pytest.approx(1.0)  # filled exactly, never over
    assert len(sub[0]["releases"]) == 10
    assert sum(1 for r in results if r[0] == "ok" and r[2]) == 10
    hh = [a for a in led.accounts() if a["unit"] == "household"]
    kpi_ok = sum(1 for r in sub[0]["releases"] if r["dataset"] == "kpi")
    assert (hh[0]["spent_epsilon"] if hh else 0.0) == pytest.approx(0.1 * kpi_ok)
    assert len({r.release_id for r in led.releases()}) == len(led.releases()) == 10
    assert all(json.dumps(r.release) for r in led.releases())
