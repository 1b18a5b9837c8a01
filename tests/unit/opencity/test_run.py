"""`opencity run` without running a DAG: configuration checks, range planning on the real
311 DAG's timetable, interval states and the summary table (issue 21 item 7)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from opencity.cli import main
from opencity.errors import ConfigError
from opencity.run import classify, config_files, plan_intervals, summary_table

DAGS = Path(__file__).resolve().parents[3] / "dags"
NOW = datetime(2026, 12, 6, 12, tzinfo=UTC)


@pytest.fixture(scope="module")
def dag_311():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS / "opencity_311.py")).dags["opencity_311"]


def test_three_weekly_intervals(dag_311):
    got = plan_intervals(dag_311, date(2026, 10, 5), date(2026, 10, 26), NOW)
    assert [(s.date().isoformat(), e.date().isoformat()) for s, e in got] == [
        ("2026-10-05", "2026-10-12"), ("2026-10-12", "2026-10-19"), ("2026-10-19", "2026-10-26")]


def test_a_range_starting_mid_week_runs_the_weeks_starting_in_it(dag_311):
    got = plan_intervals(dag_311, date(2026, 10, 7), date(2026, 10, 20), NOW)
    assert [s.date().isoformat() for s, _ in got] == ["2026-10-12", "2026-10-19"]


@pytest.mark.parametrize("start,end,message", [
    (date(2015, 1, 5), date(2015, 1, 19), "is before the start date of opencity_311"),
    (date(2026, 11, 30), date(2026, 12, 7), "ends in the future"),
    (date(2026, 10, 6), date(2026, 10, 12), "no interval of opencity_311's schedule"),
])
def test_unrunnable_ranges_are_refused(dag_311, start, end, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        plan_intervals(dag_311, start, end, NOW)


def test_a_dag_without_tasks_is_refused():
    import pendulum
    from airflow.sdk import DAG

    from opencity.timetables import PartitionTimetable

    empty = DAG("empty", schedule=PartitionTimetable("0 0 * * 1", timezone="UTC"),
                start_date=pendulum.datetime(2026, 10, 5, tz="UTC"))
    with pytest.raises(ConfigError, match="has no task"):
        plan_intervals(empty, date(2026, 10, 5), date(2026, 10, 12), NOW)


@pytest.mark.parametrize("states,error,expected", [
    ({"ingest": "success", "publish": "success"}, "", "success"),
    ({}, "", "no tasks"),
    ({"ingest": None, "publish": None}, "", "no tasks"),
    ({"ingest": "skipped"}, "", "no tasks"),
    ({"ingest": "failed", "publish": "upstream_failed"},
     "no input rows for service_requests in the data interval [...]; land the raw file(s)",
     "no data"),
    ({"ingest": "failed"}, "no input rows for x ...; 3 row(s) were quarantined (see ...)",
     "failed"),
    ({"ingest": "success", "publish": "failed"}, "PublishError: portal down", "failed"),
])
def test_interval_states(states, error, expected):
    assert classify(states, error) == expected


def test_config_dir_must_hold_a_source_registry(tmp_path):
    with pytest.raises(ConfigError, match="no such directory"):
        config_files(tmp_path / "missing")
    (tmp_path / "policy.yaml").write_text("x: 1\n")
    with pytest.raises(ConfigError, match=r"has no sources.yaml .*found: policy.yaml"):
        config_files(tmp_path)
    (tmp_path / "sources.yaml").write_text("sources: {}\n")
    with pytest.raises(ConfigError, match="non-empty 'sources:' mapping"):
        config_files(tmp_path)


def test_config_dir_without_policy_uses_the_shipped_policy(tmp_path):
    from opencity.source_registry import DEFAULT_FILE
    from privacy.policy import DEFAULT_POLICY

    (tmp_path / "sources.yaml").write_text(DEFAULT_FILE.read_text())
    assert config_files(tmp_path) == {"sources": tmp_path / "sources.yaml",
                                      "policy": DEFAULT_POLICY}
    assert config_files(None) == {"sources": DEFAULT_FILE, "policy": DEFAULT_POLICY}


def test_summary_table():
    text = summary_table({"intervals": [
        {"start": "2026-10-05", "end": "2026-10-12", "state": "success", "seconds": 12.34,
         "published": ["a/dt=2026-10-05", "b/dt=2026-10-05"]},
        {"start": "2026-10-12", "end": "2026-10-19", "state": "no data", "seconds": 2.0,
         "published": []}]})
    lines = text.splitlines()
    assert lines[0].split() == ["interval", "state", "seconds", "partitions", "published"]
    assert lines[1].split() == ["2026-10-05", "..", "2026-10-12", "success", "12.3",
                                "a/dt=2026-10-05,", "b/dt=2026-10-05"]
    assert lines[2].split()[-3:] == ["data", "2.0", "-"]


@pytest.mark.parametrize("argv,message", [
    (["--from", "2026-13-01", "--to", "2026-10-12"], "expected a date YYYY-MM-DD"),
    (["--from", "2026-10-12", "--to", "2026-10-05"], "empty range"),
    (["--from", "2026-10-12", "--to", "2026-10-12"], "empty range"),
])
def test_bad_dates_are_refused_by_the_command(tmp_path, capsys, argv, message):
    args = ["run", "opencity_311", "--raw", str(tmp_path), "--out", str(tmp_path / "o"), *argv]
    try:
        code = main(args)
    except SystemExit as exit_:  # argparse usage error
        code = exit_.code
    assert code in (1, 2)
    assert message in capsys.readouterr().err


def test_missing_raw_dir_is_refused(tmp_path, capsys):
    code = main(["run", "opencity_311", "--raw", str(tmp_path / "nope"), "--out",
                 str(tmp_path / "o"), "--from", "2026-10-05", "--to", "2026-10-12"])
    assert code == 1
    err = capsys.readouterr().err
    assert "--raw" in err and "no such directory" in err


def test_help_states_the_rule_for_intervals_without_input(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "reported as ``no data`` (nothing published, no privacy budget spent)" in text
    for flag in ("--config DIR", "--raw DIR", "--out RUN_DIR", "--from YYYY-MM-DD",
                 "--to YYYY-MM-DD"):
        assert flag in text
