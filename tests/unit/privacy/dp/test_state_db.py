"""The state database on SQLAlchemy Core: stores written by the earlier hand-written layer open
and upgrade (SQLite file and PostgreSQL DDL from tests/data/state_v2), schema versions are
checked, and every state table is in the one MetaData."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import inspect, text

from opencity.errors import ConfigError
from opencity.registry import Registry
from opencity.review.approvals import ReviewStore
from privacy.approval import ApprovalStore
from privacy.dp import chain
from privacy.dp import db as state
from privacy.dp.ledger import Ledger
from privacy.policy import load_policy

FIXTURE = Path(__file__).resolve().parents[3] / "data" / "state_v2"
DS = "opencity-cdr-mobility-daily"
TABLES = ("state_meta", "review_requests", "review_decisions", "review_withdrawals",
          "review_passes", "published", "decisions", "withdrawals", "chain", "officer_keys",
          "policy_versions", "policy_approvals", "releases", "spends", "artifacts")


def _old_sqlite(tmp_path: Path) -> str:
    path = tmp_path / "state.sqlite"
    shutil.copyfile(FIXTURE / "state.sqlite", path)
    return str(path)


def _old_postgresql(url: str) -> str:
    """The same store on PostgreSQL: the earlier layer's DDL, then the fixture's rows."""
    import psycopg

    ddl = (FIXTURE / "postgresql.sql").read_text()
    src = sqlite3.connect(FIXTURE / "state.sqlite")
    with psycopg.connect(url, autocommit=True) as con:
        for stmt in ddl.split(";"):
            body = "\n".join(x for x in stmt.splitlines() if not x.startswith("--")).strip()
            if body:
                con.execute(body)
        for table in TABLES:
            cur = src.execute(f"SELECT * FROM {table}")
            cols = [d[0] for d in cur.description]
            for row in cur.fetchall():
                con.execute(f"INSERT INTO {table} ({', '.join(cols)}) VALUES "
                            f"({', '.join(['%s'] * len(cols))})", row)
            if "id" in cols:  # as the old layer's inserts left the identity sequences
                con.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                            f"(SELECT max(id) FROM {table}))")
    src.close()
    return url


@pytest.fixture(params=["sqlite", "postgresql"])
def old_store(request, tmp_path):
    if request.param == "sqlite":
        return _old_sqlite(tmp_path)
    return _old_postgresql(request.getfixturevalue("postgres_state_url"))


def test_a_store_of_the_earlier_layer_opens_upgrades_and_keeps_everything(old_store):
    db = state.StateDB(old_store)
    reg, review = Registry(db, load_policy()), ReviewStore(db)
    led, approvals = Ledger(db, load_policy()), ApprovalStore(db)
    assert db.schema_version() == state.SCHEMA_VERSION == 2
    with db.read() as con:
        meta = dict(con.execute(text("SELECT key, value FROM state_meta")).all())
    assert {k: v for k, v in meta.items() if k != "schema_version:state"} == {
        f"schema_version:{k}": v for k, v in state.LEGACY_VERSIONS.items()}
    # ledger: both releases, their spends and the stored artefact, byte for byte
    rel = led.releases(DS)
    assert [(r.partition, r.epsilon) for r in rel] == [("dt=2026-10-05", 0.5),
                                                       ("dt=2026-10-06", 0.25)]
    assert led.artifacts(rel[0].id) == {"a.parquet": b"PAR1"}
    assert led.recorded_spend(DS, "dt=2026-10-05") == (0.5, 0.0)
    assert [a["spent_epsilon"] for a in led.accounts()] == [0.75]
    # registry, decisions, withdrawals; review history; approvals still verify
    assert reg.get(DS, "dt=2026-10-05").files == {"a.parquet": "0" * 64}
    assert [d["actor"] for d in reg.decisions(DS, "dt=2026-10-05")] == ["tester"]
    assert reg.withdrawn(DS, "dt=2026-10-05") and not reg.withdrawn(DS, "dt=2026-10-06")
    assert [r.parameters for r in review.requests()] == [{"k": 1}]
    assert [p["via"] for p in review.passes(DS)] == ["approved policy"]
    assert review.is_withdrawn(DS, "dt=2026-10-05")
    assert approvals.officer_key() is not None
    assert approvals.decisions() and all(a.verified for a in approvals.decisions())
    # the chain still links, and new entries continue it
    before = chain.entries(db)
    assert not chain.link_problems(before)
    reg.record_decision(DS, "dt=2026-10-06", "rejected", "tester")
    review.request(DS, "h" * 64, "dt=2026-10-07")
    after = chain.entries(db)
    assert len(after) == len(before) + 1 and not chain.link_problems(after)
    assert [r.id for r in review.requests()][-1] == 2  # identity/autoincrement continue


def test_an_early_review_store_gets_the_parameters_column(tmp_path):
    path = _old_sqlite(tmp_path)
    con = sqlite3.connect(path)
    con.execute("ALTER TABLE review_requests DROP COLUMN parameters")
    con.commit()
    con.close()
    review = ReviewStore(path)
    assert [r.parameters for r in review.requests()] == [{}]
    cols = {c["name"] for c in inspect(review.db.engine).get_columns("review_requests")}
    assert "parameters" in cols


def test_a_fresh_store_has_every_table_and_the_current_version(state_url):
    db = state.StateDB(state_url)
    db.ensure()
    assert db.schema_version() == len(state.MIGRATIONS)
    assert set(inspect(db.engine).get_table_names()) >= set(state.metadata.tables)
    assert set(state.metadata.tables) == set(TABLES)


def test_a_store_newer_than_this_opencity_is_refused(tmp_path):
    path = _old_sqlite(tmp_path)
    state.StateDB(path).ensure()
    con = sqlite3.connect(path)
    con.execute("UPDATE state_meta SET value = '99' WHERE key = 'schema_version:state'")
    con.commit()
    con.close()
    with pytest.raises(ConfigError, match="schema version 99.*upgrade OpenCity"):
        state.StateDB(path).ensure()


@pytest.mark.parametrize("part", ["ledger", "review"])
def test_a_part_with_an_unknown_earlier_version_is_refused(tmp_path, part):
    path = _old_sqlite(tmp_path)
    con = sqlite3.connect(path)
    con.execute("UPDATE state_meta SET value = '7' WHERE key = ?", (f"schema_version:{part}",))
    con.commit()
    con.close()
    with pytest.raises(ConfigError, match=f"the {part} tables have schema version 7"):
        Ledger(path, load_policy())
    # nothing was changed: the store has no version of its own yet
    con = sqlite3.connect(path)
    assert con.execute("SELECT 1 FROM state_meta WHERE key = 'schema_version:state'"
                       ).fetchone() is None
    con.close()


def test_no_password_in_errors_and_an_unreachable_server_is_transient():
    from opencity.errors import PipelineError

    db = state.StateDB("postgresql://u:secret@127.0.0.1:1/x", timeout=1)
    with pytest.raises(PipelineError) as err:
        db.ensure()
    assert err.value.transient and "secret" not in str(err.value)
    assert "u:***@" in str(err.value)


def test_registry_withdrawals_missing_from_the_review_store_are_copied_once(tmp_path):
    path = _old_sqlite(tmp_path)
    con = sqlite3.connect(path)
    con.execute("DELETE FROM review_withdrawals")
    con.commit()
    con.close()
    reg, review = Registry(path, load_policy()), ReviewStore(path)
    assert reg.withdrawn(DS, "dt=2026-10-05")
    (w,) = review.withdrawals(DS)
    assert (w.partition, w.reason, w.withdrawn_by, w.target) == (
        "dt=2026-10-05", "a test withdrawal", "tester", "registry")
    assert len(ReviewStore(path).withdrawals()) == 1  # the migration ran once


def test_one_store_of_withdrawals_and_one_chain_entry(tmp_path):
    path = _old_sqlite(tmp_path)
    reg, review = Registry(path, load_policy()), ReviewStore(path)
    n = len(chain.entries(reg.db))
    review.withdraw(DS, "dt=2026-10-06", "wrong map", by="officer", target="local",
                    resources=["counts"])  # not in the registry: history only
    assert reg.withdrawn(DS, "dt=2026-10-06") and len(chain.entries(reg.db)) == n
    reg.record(DS, "dt=2026-10-08", {"spend": {"subscriber": {"epsilon": 0.5, "delta": 0.0}}},
               {"a.parquet": "1" * 64}, {"epsilon": 0.5})
    n = len(chain.entries(reg.db))
    review.withdraw(DS, "dt=2026-10-08", "wrong map", by="officer", target="local",
                    resources=["counts"])
    assert reg.withdrawn(DS, "dt=2026-10-08")
    assert [e["kind"] for e in chain.entries(reg.db)[n:]] == ["withdrawal"]
    reg.withdraw(DS, "dt=2026-10-08", "officer", "again")  # already withdrawn: nothing new
    assert len(chain.entries(reg.db)) == n + 1
    assert [w.reason for w in review.withdrawals(DS) if w.partition == "dt=2026-10-08"] == [
        "wrong map"]
