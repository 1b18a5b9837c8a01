"""The release registry: replay with the same parameters, refusal with other ones (catalog
unchanged), policy check, per-partition parameters in the package, decisions, withdrawals.
Runs on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

import json
from datetime import date

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from opencity.errors import ConfigError
from opencity.registry import Registry, RepublishRefusedError, publish_partition
from opencity.settings import Settings
from publish.base import DatasetRelease, Resource

WEEKLY = "test-weekly"
DP = "test-dp"
# The registry's own test policy (independent of how the stored policy releases each dataset).
POLICY = {
    "version": 1,
    "units": {"subscriber": {"period": "month", "epsilon": 32.0, "delta": 1e-5},
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


@pytest.fixture(params=["sqlite", "postgresql"])
def settings(request, tmp_path, monkeypatch):
    import yaml

    (tmp_path / "policy.yaml").write_text(yaml.safe_dump(POLICY))
    monkeypatch.setenv("OPENCITY_POLICY", str(tmp_path / "policy.yaml"))
    url = (str(tmp_path / "state.sqlite") if request.param == "sqlite"
           else request.getfixturevalue("postgres_state_url"))
    from opencity.review.testing import approve_policy

    approve_policy(url)  # this portal's officer approved the test policy
    return Settings(run_dir=str(tmp_path / "run"), state_url=url)


def _release(tmp_path, part, values, name=WEEKLY, key="district_id", value="requests",
             **extra):
    f = tmp_path / "src" / part / "part-0.parquet"
    f.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({key: ["D01", "D02"], value: values, **extra}), f)
    return DatasetRelease(name=name, title="t", description="d",
                          resources=(Resource(f, "counts", "parquet", "week", part),),
                          privacy={"privacy_method": "small_count_suppression"})


def _snapshot(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def test_replay_same_params_refuse_other_params(settings, tmp_path):
    catalog = tmp_path / "run" / "catalog"
    rel = _release(tmp_path, "dt=2026-10-05", [20, None])
    publish_partition(settings, rel, {"threshold": 15})
    first = _snapshot(catalog)
    publish_partition(settings, rel, {"threshold": 15})  # replay
    assert _snapshot(catalog) == first

    # Issue 10 attack: the week re-run with other parameters (here a tighter threshold,
    # which the policy allows for a new partition) would publish a second version.
    weaker = _release(tmp_path, "dt=2026-10-05", [20, 11])
    with pytest.raises(RepublishRefusedError) as err:
        publish_partition(settings, weaker, {"threshold": 20})
    msg = str(err.value)
    assert WEEKLY in msg and "dt=2026-10-05" in msg
    assert '{"threshold":15}' in msg and '{"threshold":20}' in msg
    # Looser than the policy: refused before anything else.
    with pytest.raises(ConfigError, match="requires at least 15"):
        publish_partition(settings, weaker, {"threshold": 10})
    assert _snapshot(catalog) == first

    # A new partition may use tighter parameters; the package states each partition's own.
    publish_partition(settings, _release(tmp_path, "dt=2026-10-12", [40, 50]),
                      {"threshold": 20})
    pkg = json.loads((catalog / WEEKLY / "package.json").read_text())
    parts = pkg["opencity"]["privacy"]["partitions"]
    assert parts["dt=2026-10-05"]["params"] == {"threshold": 15}
    assert parts["dt=2026-10-12"]["params"] == {"threshold": 20}
    reg = Registry(settings.state_url)
    rec = reg.get(WEEKLY, "dt=2026-10-05")
    assert rec.params == {"threshold": 15} and rec.policy_hash == reg.version_hash(WEEKLY)
    # every file the catalog publishes, its CSV copy with names included (recorded first)
    assert sorted(rec.files) == ["dt=2026-10-05/counts", "dt=2026-10-05/counts-csv"]
    assert all(len(h) == 64 for h in rec.files.values())
    assert [p.partition for p in reg.partitions(WEEKLY)] == ["dt=2026-10-05", "dt=2026-10-12"]


def test_dp_partition_states_the_portal_budget(settings, tmp_path):
    from privacy.dp import DPBudget, Ledger

    ds = DP
    Ledger(settings.state_url).spend(ds, "dt=2026-10-05", "daily", date(2026, 10, 5),
                                     {"subscriber": DPBudget(1.0, 1e-7)})
    publish_partition(settings, _release(tmp_path, "dt=2026-10-05", [1, 2], name=ds,
                                                key="region_id", value="value"),
                      {"epsilon": 1.0, "delta": 1e-7})
    pkg = json.loads((tmp_path / "run" / "catalog" / ds / "package.json").read_text())
    budget = pkg["opencity"]["privacy"]["portal_budget"]["subscriber"]
    assert budget["period"] == "2026-10" and budget["cap_epsilon"] == 32.0
    assert budget["spent_epsilon_at_publication"] == 1.0
    with pytest.raises(ConfigError, match=r"epsilon\[subscriber\].*at most 1.0"):
        publish_partition(settings, _release(tmp_path, "dt=2026-10-06", [1, 2], name=ds,
                                                key="region_id", value="value"),
                          {"epsilon": 5.0, "delta": 1e-7})


def test_decisions_and_withdrawal(settings, tmp_path):
    reg = Registry(settings.state_url)
    rel = _release(tmp_path, "dt=2026-10-05", [20, 30])
    with pytest.raises(ConfigError, match="not published"):
        reg.withdraw(WEEKLY, "dt=2026-10-05", "alice", "test")
    i = reg.record_decision(WEEKLY, "dt=2026-10-05", "approved", "alice", "looks fine",
                            {"report": "r.html"})
    assert reg.decisions(WEEKLY)[-1]["id"] == i
    assert reg.decisions(WEEKLY, "dt=2026-10-05")[0]["details"] == {"report": "r.html"}
    publish_partition(settings, rel, {"threshold": 15})
    reg.withdraw(WEEKLY, "dt=2026-10-05", "alice", "error found")
    assert reg.withdrawn(WEEKLY, "dt=2026-10-05")
    with pytest.raises(RepublishRefusedError, match="withdrawn"):
        publish_partition(settings, rel, {"threshold": 15})


def test_column_without_a_role_is_refused(settings, tmp_path):
    rel = _release(tmp_path, "dt=2026-10-05", [20, 30], status=["open", "closed"])
    with pytest.raises(ConfigError, match="publishes column.s. status that the release policy "
                                          "does not list"):
        publish_partition(settings, rel, {"threshold": 15})
    assert not (tmp_path / "run" / "catalog").exists()
    assert Registry(settings.state_url).partitions() == []


def test_unknown_dataset_is_refused(settings, tmp_path):
    with pytest.raises(ConfigError, match="no entry in the release policy"):
        publish_partition(settings, _release(tmp_path, "dt=2026-10-05", [1, 2],
                                             name="opencity-unlisted"), {"threshold": 15})
