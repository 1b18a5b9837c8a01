"""The tamper-evident chain and `opencity verify` (issue 20, items 3, 4 and 7): a consistent
portal verifies; a deleted spend row, an edited release record, a swapped published file and a
re-linked chain are each found; a fresh state database is refused by an existing catalog; the
registry records a partition before the catalog switch. SQLite and a real PostgreSQL."""

from __future__ import annotations

import json
from datetime import date

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy import text

from opencity.errors import ConfigError
from opencity.registry import Registry, publish_partition
from opencity.settings import Settings
from opencity.verify import run_verify
from privacy.dp import DPBudget, Ledger, chain
from privacy.dp.ledger import StateDB
from publish.base import DatasetRelease, Resource

DP = "test-dp"
WEEKLY = "test-weekly"
POLICY = {
    "version": 1,
    "units": {"subscriber": {"period": "month", "epsilon": 3.0, "delta": 1e-5},
              "requester": {"period": "month", "epsilon": 5.0, "delta": 0.0}},
    "datasets": {
        WEEKLY: {"method": "small_count_suppression", "unit": "requester",
                 "cadence": "weekly", "threshold": 15,
                 "columns": {"district_id": "public", "requests": "public"}},
        DP: {"method": "differential_privacy", "unit": "subscriber", "cadence": "daily",
             "epsilon": 1.0, "delta": 1e-7,
             "columns": {"region_id": "public", "value": "public"}},
    },
}
DAYS = ("dt=2026-10-05", "dt=2026-10-06")


@pytest.fixture(params=["sqlite", "postgresql"])
def portal(request, tmp_path, monkeypatch):
    """Two DP days and a weekly table published through the registry; returns settings."""
    import yaml

    (tmp_path / "policy.yaml").write_text(yaml.safe_dump(POLICY))
    monkeypatch.setenv("OPENCITY_POLICY", str(tmp_path / "policy.yaml"))
    url = (str(tmp_path / "state.sqlite") if request.param == "sqlite"
           else request.getfixturevalue("postgres_state_url"))
    from opencity.review.testing import approve_policy

    approve_policy(url)  # this portal's officer approved the test policy
    settings = Settings(run_dir=str(tmp_path / "run"), state_url=url)
    for i, part in enumerate(DAYS):
        Ledger(url).spend(DP, part, "daily", date.fromisoformat(part[3:]),
                          {"subscriber": DPBudget(1.0, 1e-7)})
        publish_partition(settings, _release(tmp_path, part, [3 + i, 4], DP, "region_id",
                                             "value"), {"epsilon": 1.0, "delta": 1e-7})
    publish_partition(settings, _release(tmp_path, DAYS[0], [20, None], WEEKLY, "district_id",
                                         "requests"), {"threshold": 15})
    return settings


def _release(tmp_path, part, values, name, key, value):
    f = tmp_path / "src" / name / part / "part-0.parquet"
    f.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({key: ["D01", "D02"], value: values}), f)
    return DatasetRelease(name=name, title="t", description="d",
                          resources=(Resource(f, "counts", "parquet", "day", part),),
                          privacy={"privacy_method": "test"})


def _verify(settings, **kw):
    return run_verify(settings.run_dir and __import__("pathlib").Path(settings.run_dir),
                      state=settings.state_url, **kw)


def test_consistent_portal_verifies_and_public_records_carry_their_entries(portal):
    report = _verify(portal)
    assert report["ok"], report["problems"]
    assert report["state_checked"] and report["published_chain_entries"] == 3
    totals = {(t["unit"], t["period"]): t["epsilon"] for t in report["totals"]}
    assert totals == {("subscriber", "2026-10"): 2.0}
    pkg = json.loads((__import__("pathlib").Path(portal.run_dir) / "catalog" / DP /
                      "package.json").read_text())
    entries = [p["privacy"]["chain"] for p in pkg["opencity"]["partitions"]]
    assert [e["partition"] for e in entries] == list(DAYS)
    assert all(chain.self_consistent(e) for e in entries)
    assert entries[0]["body"]["spends"] == [{"unit": "subscriber", "period": "2026-10",
                                            "epsilon": 1.0, "delta": 1e-7}]
    # the public check alone (a citizen with the catalog only) passes too
    assert _verify(portal, public_only=True)["ok"]


def test_deleted_spend_row_is_found(portal):
    db = StateDB(portal.state_url)
    with db.write() as con:
        con.execute(text("DELETE FROM spends WHERE release_pk = (SELECT id FROM releases WHERE "
                         "partition = :p)"), {"p": DAYS[1]})
    report = _verify(portal)
    assert not report["ok"]
    assert any("spend rows differ" in p and DAYS[1] in p for p in report["problems"])
    assert any("ledger total" in p for p in report["problems"])


def test_edited_release_record_is_found(portal):
    db = StateDB(portal.state_url)
    with db.write() as con:
        con.execute(text("UPDATE published SET params_json = :j WHERE dataset = :d AND "
                         "partition = :p"), {"j": '{"delta":1e-07,"epsilon":0.1}', "d": DP,
                                             "p": DAYS[0]})
    report = _verify(portal)
    assert not report["ok"]
    assert any("record differs from its chain entry" in p for p in report["problems"])


def test_rewritten_chain_entry_no_longer_links(portal):
    db = StateDB(portal.state_url)
    with db.write() as con:
        con.execute(text("UPDATE chain SET body_json = :b WHERE seq = 1"),
                    {"b": '{"forged":true}'})
    report = _verify(portal)
    assert any("does not match its hash" in p for p in report["problems"])


def test_swapped_published_file_is_found(portal, tmp_path):
    from pathlib import Path

    catalog = Path(portal.run_dir) / "catalog" / DP
    victim = next(p for p in catalog.rglob("*.parquet") if DAYS[0] in str(p))
    pq.write_table(pa.table({"region_id": ["D01", "D02"], "value": [99, 99]}), victim)
    report = _verify(portal, public_only=True)
    assert not report["ok"]
    assert any(DAYS[0] in p for p in report["problems"])


def test_fresh_state_database_cannot_publish_into_the_catalog(portal, tmp_path):
    """Issue 20 attack: a new state DB would reset budgets and the registry's memory."""
    from pathlib import Path

    catalog = Path(portal.run_dir) / "catalog"
    before = {p: p.read_bytes() for p in catalog.rglob("*") if p.is_file()}
    fresh = Settings(run_dir=portal.run_dir, state_url=str(tmp_path / "fresh.sqlite"))
    from opencity.review.testing import approve_policy

    approve_policy(fresh.state_url)  # even with an officer (of the fresh store) approving
    Ledger(fresh.state_url).spend(DP, "dt=2026-10-07", "daily", date(2026, 10, 7),
                                  {"subscriber": DPBudget(1.0, 1e-7)})
    with pytest.raises(ConfigError, match="does not hold the releases the catalog published"):
        publish_partition(fresh, _release(tmp_path, "dt=2026-10-07", [1, 1], DP, "region_id",
                                          "value"), {"epsilon": 1.0, "delta": 1e-7})
    assert {p: p.read_bytes() for p in catalog.rglob("*") if p.is_file()} == before


def test_registry_records_before_the_catalog_switch(portal, tmp_path):
    """A publisher that dies at the switch: the registry already knows the partition (and a
    rerun with other parameters is refused)."""
    from opencity.registry import RepublishRefusedError
    from publish.local import LocalCatalog

    class DiesAtSwitch(LocalCatalog):
        def publish_files(self, release):
            raise KeyboardInterrupt("killed at the switch")

    from pathlib import Path

    dies = DiesAtSwitch(Path(portal.run_dir) / "catalog")
    rel = _release(tmp_path, "dt=2026-10-12", [30, 40], WEEKLY, "district_id", "requests")
    with pytest.raises(KeyboardInterrupt):
        publish_partition(portal, rel, {"threshold": 15}, publisher=dies)
    reg = Registry(portal.state_url)
    assert reg.get(WEEKLY, "dt=2026-10-12") is not None
    assert reg.chain_entry(WEEKLY, "dt=2026-10-12")["body"]["files"]
    with pytest.raises(RepublishRefusedError):
        publish_partition(portal, rel, {"threshold": 20})
    publish_partition(portal, rel, {"threshold": 15})  # the rerun completes the release
    assert _verify(portal)["ok"]


def test_withdrawn_partition_does_not_come_back_even_with_a_fresh_state_database(portal,
                                                                                 tmp_path):
    """Issue 20 attack: withdraw, then republish (with the portal's state, then a new one)."""
    from pathlib import Path

    from opencity.registry import RepublishRefusedError
    from opencity.review.testing import approve_policy
    from opencity.review.withdraw import withdraw

    withdraw(portal, DP, DAYS[0], "an error in the input")
    catalog = Path(portal.run_dir) / "catalog"
    before = {p: p.read_bytes() for p in catalog.rglob("*") if p.is_file()}
    again = _release(tmp_path / "again", DAYS[0], [3, 4], DP, "region_id", "value")
    with pytest.raises(RepublishRefusedError, match="withdrawn"):
        publish_partition(portal, again, {"epsilon": 1.0, "delta": 1e-7})
    fresh = Settings(run_dir=portal.run_dir, state_url=str(tmp_path / "fresh.sqlite"))
    approve_policy(fresh.state_url)
    Ledger(fresh.state_url).spend(DP, DAYS[0], "daily", date.fromisoformat(DAYS[0][3:]),
                                  {"subscriber": DPBudget(1.0, 1e-7)})
    with pytest.raises(ConfigError, match="does not hold the releases"):
        publish_partition(fresh, again, {"epsilon": 1.0, "delta": 1e-7})
    assert {p: p.read_bytes() for p in catalog.rglob("*") if p.is_file()} == before
    assert _verify(portal)["ok"]  # the withdrawal is a chain entry; the spend stays counted
