"""The release runner's commit step (opencity.release.commit) on a small spec, and its typed
payloads: guard and gate run before anything moves, a failure discards staging, a rerun after
the move checks the committed partition again, a skipped period commits nothing."""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from opencity.errors import DataQualityError, GuardError
from opencity.release import (
    Committed,
    Outcome,
    ProductFailedError,
    ProductSpec,
    Staged,
    Step,
    as_staged,
    commit,
    raise_for_failed,
)
from opencity.settings import Settings

START = datetime(2026, 10, 5, tzinfo=UTC)
DATASET = "test-product"


def _spec(calls, *, guard_ok=True, gate_ok=True, keep=()):
    def guard(settings, staged, folder, start):
        calls.append(("guard", folder.name))
        if not guard_ok:
            raise GuardError("refused by the test guard")
        return {"passed": True}

    def gate(settings, staged, folder, start):
        calls.append(("gate", folder.name))
        if not gate_ok:
            raise DataQualityError("refused by the test gate")
        return {"success": True, "rows": pq.read_table(folder / "t.parquet").num_rows}

    return ProductSpec(dataset=DATASET, files=("t.parquet",), table="t.parquet", csv="t.csv",
                       stages=(Step("stage", lambda *a: None),), guard=guard, gate=gate,
                       release=lambda *a: None, params=lambda *a: {}, keep=keep)


def _staged(settings, rows=3, **details) -> Staged:
    staging = settings.layout.output(DATASET, START).with_name(".dt=2026-10-05.staging")
    staging.mkdir(parents=True)
    pq.write_table(pa.table({"x": list(range(rows))}), staging / "t.parquet")
    return Staged(DATASET, "dt=2026-10-05", staging_dir=str(staging), details=details)


def test_commit_guards_gates_moves_and_copies(tmp_path):
    settings, calls = Settings(run_dir=str(tmp_path)), []
    committed = commit(_spec(calls), settings, _staged(settings, epsilon=0.5), START)
    assert calls == [("guard", ".dt=2026-10-05.staging"), ("gate", ".dt=2026-10-05.staging")]
    final = settings.layout.output(DATASET, START)
    assert committed.output_dir == str(final) and committed.rows == 3
    assert committed.files == ("t.parquet",) and committed["epsilon"] == 0.5
    assert (settings.layout.csv(DATASET, START) / "t.csv").is_file()
    assert not final.with_name(".dt=2026-10-05.staging").exists()
    # Rerun alone after the move: the committed partition is checked again, same result.
    again = commit(_spec(calls), settings, Staged.from_xcom(committed.to_xcom() | {
        "staging_dir": str(final.with_name(".dt=2026-10-05.staging"))}), START)
    assert calls[-2:] == [("guard", "dt=2026-10-05"), ("gate", "dt=2026-10-05")]
    assert again.output_dir == committed.output_dir and again.rows == 3


@pytest.mark.parametrize(("guard_ok", "gate_ok", "error"),
                         [(False, True, GuardError), (True, False, DataQualityError)])
def test_a_refusal_discards_staging_and_moves_nothing(tmp_path, guard_ok, gate_ok, error):
    settings = Settings(run_dir=str(tmp_path))
    staged = _staged(settings)
    with pytest.raises(error):
        commit(_spec([], guard_ok=guard_ok, gate_ok=gate_ok), settings, staged, START)
    assert not settings.layout.output(DATASET, START).exists()
    assert not (tmp_path / "outputs" / DATASET / ".dt=2026-10-05.staging").exists()


def test_nothing_staged_names_the_missing_file_and_the_task(tmp_path):
    settings = Settings(run_dir=str(tmp_path))
    staged = Staged(DATASET, "dt=2026-10-05", staging_dir=str(tmp_path / "nowhere"))
    with pytest.raises(DataQualityError, match=r"t\.parquet missing.*rerun the stage task"):
        commit(_spec([]), settings, staged, START)


def test_a_skipped_period_commits_nothing(tmp_path):
    settings, calls = Settings(run_dir=str(tmp_path)), []
    staged = as_staged(DATASET, START, {"skipped": True, "reason": "no input rows"})
    assert staged.skipped and not staged.released
    committed = commit(_spec(calls), settings, staged, START)
    assert committed.skipped and committed.reason == "no input rows" and calls == []


def test_keep_carries_over_what_a_replay_lacks(tmp_path):
    settings = Settings(run_dir=str(tmp_path))
    commit(_spec([]), settings, _staged(settings), START)
    final = settings.layout.output(DATASET, START)
    (final / "_run").mkdir()
    (final / "_run" / "report.json").write_text("{}")
    commit(_spec([], keep=("_run",)), settings, _staged(settings), START)  # a replay
    assert (final / "_run" / "report.json").read_text() == "{}"


def test_payloads_round_trip_through_xcom():
    c = Committed(DATASET, "dt=2026-10-05", output_dir="/x", files=("a", "b"), rows=2,
                  details={"ledger": {"epsilon": 0.5}})
    x = c.to_xcom()
    assert x["files"] == ["a", "b"] and x["ledger"] == {"epsilon": 0.5}
    assert Committed.from_xcom(x) == c and Committed.from_xcom(None) is None


def test_a_failed_product_fails_the_run_after_the_manifest():
    ok = Outcome(Staged(DATASET, "p"), Committed(DATASET, "p"), None)
    with pytest.raises(ProductFailedError, match=f"{DATASET} failed.*manifest m.json"):
        raise_for_failed({DATASET: ok}, START, "m.json")


def test_a_spec_must_stage_its_table():
    with pytest.raises(ValueError, match="not staged"):
        ProductSpec(dataset=DATASET, files=("a.parquet",), table="b.parquet",
                    stages=(Step("s", lambda *a: None),), gate=lambda *a: {},
                    release=lambda *a: None, params=lambda *a: {})


def test_the_dag_factory_refuses_task_ids_that_repeat():
    from opencity.dagkit import release_dag
    from opencity.errors import ConfigError

    spec = _spec([])
    with pytest.raises(ConfigError, match="task ids repeat"):
        release_dag(dag_id="t", schedule=None, start_date=START, doc_md="t", period="week",
                    example="2026-10-05", example_end="2026-10-12", ingest=lambda *a: {},
                    products=(spec, spec), manifest=lambda *a: "")
