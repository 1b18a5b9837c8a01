"""Issue 20 attacks on the real pipeline: a looser policy file from the environment and
self-approval without the officer's key. Each is refused; the catalog (or output folder) stays
byte-identical and the ledger unchanged.

Before issue 20, ``OPENCITY_POLICY=looser.yaml opencity mobility ...`` re-released a day at
epsilon 19 with no approval, and ``opencity approve --by "privacy officer"`` cleared the gate
for anyone with a shell.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from opencity.cli import main

pytestmark = [pytest.mark.integration, pytest.mark.airflow]

DAGS = Path(__file__).resolve().parents[2] / "dags"
REPO = Path(__file__).resolve().parents[2]
MOB = "opencity-cdr-mobility-daily"
WEEKLY = "opencity-311-requests-weekly"
MICRO = "opencity-311-requests-microdata"


def _tree(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()} if root.exists() else {}


def _ledger_rows(state: Path) -> dict[str, list]:
    """The ledger and the registry as rows (what 'unchanged' means)."""
    con = sqlite3.connect(state)
    try:
        return {t: con.execute(f"SELECT * FROM {t} ORDER BY 1, 2").fetchall()
                for t in ("releases", "spends", "artifacts", "published")
                if con.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (t,)).fetchone()}
    finally:
        con.close()


def _looser(tmp_path: Path, pairs: list[tuple[str, str]]) -> Path:
    text = (REPO / "privacy" / "policy.yaml").read_text()
    for old, new in pairs:
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    path = tmp_path / "looser.yaml"
    path.write_text(text)
    return path


def test_looser_policy_file_for_opencity_mobility_is_refused(sample_raw, tmp_path,
                                                             monkeypatch, capsys):
    state = tmp_path / "state.sqlite"
    monkeypatch.setenv("OPENCITY_STATE_URL", str(state))
    monkeypatch.delenv("OPENCITY_POLICY", raising=False)
    from opencity.review.testing import approve_policy

    approve_policy(str(state))  # the officer approved the stored policy

    def mobility(day: str, out: Path, *extra: str) -> int:
        return main(["mobility", str(sample_raw / "cdr"), "--towers",
                     str(sample_raw / "city" / "towers.csv"), "--date", day, "--out",
                     str(out), "--quiet", *extra])

    out = tmp_path / "out"
    assert mobility("2026-10-05", out / "d1") == 0
    before, files = _ledger_rows(state), _tree(out)
    # The attack of the issue: epsilon 19 per release (a subscriber's month would reach 34
    # of 32) from a policy file nobody approved; then the same with a raised cap.
    looser = _looser(tmp_path, [("    epsilon: 1.0\n    # delta 0: every product",
                                 "    epsilon: 19.0\n    # delta 0: every product")])
    monkeypatch.setenv("OPENCITY_POLICY", str(looser))
    capsys.readouterr()
    assert mobility("2026-10-06", out / "d2", "--epsilon", "19") == 1
    err = capsys.readouterr().err
    from privacy.approval import dataset_version
    from privacy.policy import load_policy

    h = dataset_version(load_policy(), MOB).hash
    assert MOB in err and "not approved by the privacy officer" in err
    assert f"opencity approve {MOB} --policy {h} --key" in err
    assert "epsilon[subscriber]: 19 (approved 1)" in err
    assert "Traceback" not in err
    # A rerun of the recorded day under the looser file is refused too (no replay either).
    assert mobility("2026-10-05", out / "d1") == 1
    assert _ledger_rows(state) == before and _tree(out) == files


def test_looser_policy_and_self_approval_on_the_311_dag_are_refused(
        airflow_db, sample_raw, tmp_path, monkeypatch, capsys):
    from airflow.dag_processing.dagbag import DagBag
    from airflow.sdk import DagRunState

    state = tmp_path / "state.sqlite"
    monkeypatch.setenv("OPENCITY_STATE_URL", str(state))
    monkeypatch.setenv("OPENCITY_APPROVAL_MODE", "cli")
    monkeypatch.delenv("OPENCITY_POLICY", raising=False)
    for var in ("OPENCITY_SUPPRESSION_K", "OPENCITY_MICRODATA_K"):
        monkeypatch.delenv(var, raising=False)
    from opencity.review.testing import approve_policy

    approve_policy(str(state))
    dag = DagBag(dag_folder=str(DAGS / "opencity_311.py")).get_dag("opencity_311")
    run_dir = tmp_path / "run"
    conf = {"run_dir": str(run_dir), "raw_dir": str(sample_raw)}
    assert dag.test(logical_date=datetime(2026, 10, 12, tzinfo=UTC),
                    run_conf=conf).state == DagRunState.SUCCESS
    catalog = run_dir / "catalog"
    first, rows = _tree(catalog), _ledger_rows(state)
    assert any(k.startswith(f"{WEEKLY}/") for k in first)

    # (a) A looser policy file: the weekly table at epsilon 3.0 (5x), microdata at k = 2.
    looser = _looser(tmp_path, [("    epsilon: 0.6\n", "    epsilon: 3.0\n"),
                                ("    k: 5\n", "    k: 2\n"),
                                ("    max_records_per_person: 4\n",
                                 "    max_records_per_person: 1\n")])
    monkeypatch.setenv("OPENCITY_POLICY", str(looser))
    week2 = datetime(2026, 10, 19, tzinfo=UTC)
    dr = dag.test(logical_date=week2, run_conf=conf)
    assert dr.state == DagRunState.FAILED
    states = {ti.task_id: ti.state for ti in dr.get_task_instances()}
    assert states["aggregate"] == "failed"  # refused before any noise was drawn
    assert states["publish_weekly"] != "success" and states["publish_microdata"] != "success"
    assert _tree(catalog) == first and _ledger_rows(state) == rows

    # (b) Self-approval: without a key, with the operator's own key, by registering it, by
    # writing an approval row: each refused; the rerun is refused the same way.
    from privacy.approval import dataset_version
    from privacy.policy import load_policy

    h = dataset_version(load_policy(), WEEKLY).hash
    capsys.readouterr()
    assert main(["approve", WEEKLY, "--policy", h, "--by", "privacy officer"]) == 1
    assert "--key FILE" in capsys.readouterr().err
    mine = tmp_path / "operator.key"
    assert main(["officer", "keygen", str(mine)]) == 0
    assert main(["approve", WEEKLY, "--policy", h, "--by", "privacy officer",
                 "--key", str(mine)]) == 1
    assert "not the privacy officer's registered key" in capsys.readouterr().err
    assert main(["officer", "register", "--public-key", f"{mine}.pub"]) == 1
    assert "already registered" in capsys.readouterr().err
    con = sqlite3.connect(state)
    con.execute("INSERT INTO review_decisions (dataset, policy_hash, decision, decided_by, "
                "decided_at, comment, source) VALUES (?, ?, 'approved', 'privacy officer', "
                "'2026-10-20T00:00:00+00:00', '', 'cli')", (WEEKLY, h))
    con.execute("INSERT INTO policy_approvals (dataset, version, content, decision, "
                "decided_by, decided_at, comment, source) VALUES (?, ?, '{}', 'approved', "
                "'privacy officer', '2026-10-20T00:00:00+00:00', '', 'cli')", (WEEKLY, h))
    con.commit()
    con.close()
    dr = dag.test(logical_date=week2, run_conf=conf)
    assert dr.state == DagRunState.FAILED
    assert _tree(catalog) == first and _ledger_rows(state) == rows

    # The operator may still reject (no key needed); the officer's key approves.
    assert main(["approve", WEEKLY, "--policy", h, "--reject", "--comment", "no"]) == 0
    from opencity.review.testing import throwaway_key_path

    assert main(["approve", WEEKLY, "--policy", h, "--key",
                 str(throwaway_key_path(os.environ["OPENCITY_STATE_URL"])),
                 "--by", "officer"]) == 0
    from privacy.approval import ApprovalStore

    assert ApprovalStore(state).is_approved(WEEKLY, h)
    assert not ApprovalStore(state).is_approved(MICRO, dataset_version(load_policy(),
                                                                       MICRO).hash)


def test_opencity_kpi_run_needs_an_approved_version(tmp_path, monkeypatch, capsys):
    """`opencity kpi run` has no approval gate: an unapproved version (here a tighter one,
    the requester cap lowered) is refused before anything is read, computed or spent."""
    state = tmp_path / "state.sqlite"
    monkeypatch.setenv("OPENCITY_STATE_URL", str(state))
    from opencity.review.testing import approve_policy

    approve_policy(str(state))
    tighter = _looser(tmp_path, [("(5 weeks x 0.6).\n    epsilon: 5.0\n",
                                  "(5 weeks x 0.6).\n    epsilon: 4.0\n")])
    monkeypatch.setenv("OPENCITY_POLICY", str(tighter))
    run_dir = tmp_path / "run"
    before = _ledger_rows(state)
    capsys.readouterr()
    assert main(["kpi", "run", "--run-dir", str(run_dir), "--month", "2026-10",
                 "--raw-dir", str(tmp_path / "no-raw")]) == 1
    err = capsys.readouterr().err
    assert "opencity-kpis: policy version" in err and "not approved" in err
    assert "opencity approve opencity-kpis --policy" in err
    assert _ledger_rows(state) == before and not (run_dir / "catalog").exists()
