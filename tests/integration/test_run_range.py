"""`opencity run DAG_ID --raw DIR --out RUN_DIR --from --to` (issue 21 item 7): the real DAG
through dag.test(), one run per data interval, in a subprocess (as a steward runs it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.airflow]


def _run(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "opencity.cli", "run", *args]
    return subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ))


@pytest.mark.slow
def test_three_weeks_of_311_two_with_data_one_gap(sample_raw, tmp_path):
    """The session sample covers 2026-10-05..18: two weeks with data, then a week without."""
    out = tmp_path / "run"
    proc = _run("opencity_311", "--raw", str(sample_raw), "--out", str(out),
                "--from", "2026-10-05", "--to", "2026-10-26")
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    summary = json.loads((out / "run-opencity_311-2026-10-05-2026-10-26.json").read_text())
    states = [(r["start"], r["end"], r["state"]) for r in summary["intervals"]]
    assert states == [("2026-10-05", "2026-10-12", "success"),
                      ("2026-10-12", "2026-10-19", "success"),
                      ("2026-10-19", "2026-10-26", "no data")]
    assert summary["ok"] is True
    for r in summary["intervals"][:2]:
        assert r["tasks"] > 5
        assert r["task_seconds"]["ingest"] > 0
        assert sum(r["task_seconds"].values()) <= r["seconds"]
        assert f"opencity-311-requests-weekly/dt={r['start']}" in r["published"]
        for entry in r["published"]:  # every partition reported is in the catalog
            dataset, part = entry.split("/")
            package = json.loads((out / "catalog" / dataset / "package.json").read_text())
            files = [res["path"] for res in package["resources"] if res["partition"] == part]
            assert files and all((out / "catalog" / dataset / f).is_file() for f in files)
    # the gap publishes nothing and is said so
    gap = summary["intervals"][2]
    assert gap["published"] == []
    assert not list((out / "catalog").glob("*/data/*/dt=2026-10-19"))
    # progress bar on stderr, the summary table on stdout
    assert "interval" in proc.stderr and "3/3" in proc.stderr
    head, *rows = [line for line in proc.stdout.splitlines() if line.strip()][:4]
    assert head.split()[:4] == ["interval", "state", "seconds", "partitions"]
    assert rows[0].startswith("2026-10-05 .. 2026-10-12  success")
    assert "opencity-311-requests-weekly/dt=2026-10-05" in rows[0]
    assert rows[2].startswith("2026-10-19 .. 2026-10-26  no data")
    assert "2 success, 1 no data" in proc.stdout


@pytest.mark.slow
def test_a_range_without_any_data_fails(sample_raw, tmp_path):
    out = tmp_path / "run"
    proc = _run("opencity_311", "--raw", str(sample_raw), "--out", str(out),
                "--from", "2026-10-19", "--to", "2026-10-26")
    assert proc.returncode == 1
    assert "no data" in proc.stdout
    assert "no interval of [2026-10-19, 2026-10-26) had input data" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_an_unapproved_config_policy_is_refused(sample_raw, tmp_path):
    """A city's own policy.yaml that no officer approved: the approval gate refuses the first
    interval with its message (opencity approve ...), nothing is published, exit 1."""
    from opencity.source_registry import DEFAULT_FILE
    from privacy.policy import DEFAULT_POLICY

    config = tmp_path / "city"
    config.mkdir()
    (config / "sources.yaml").write_text(DEFAULT_FILE.read_text())
    # a new policy version of the weekly table (issue 20: versions are per dataset, their
    # parameters and units' budgets): a tighter epsilon computes, then waits for the officer
    text = DEFAULT_POLICY.read_text()
    assert text.count("    epsilon: 0.6\n") == 1
    (config / "policy.yaml").write_text(text.replace("    epsilon: 0.6\n", "    epsilon: 0.5\n"))
    out = tmp_path / "run"
    proc = _run("opencity_311", "--config", str(config), "--raw", str(sample_raw),
                "--out", str(out), "--from", "2026-10-05", "--to", "2026-10-19")
    assert proc.returncode == 1, proc.stdout
    assert "waits for a privacy officer's approval" in proc.stderr
    assert "opencity approve" in proc.stderr
    assert "not run" in proc.stdout  # the second interval is not attempted
    assert not list((out / "catalog").glob("*/data/*/dt=*"))
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("args,message", [
    (("no_such_dag", "--from", "2026-10-05", "--to", "2026-10-12"),
     "unknown DAG 'no_such_dag'; known DAGs: "),
    (("opencity_311", "--from", "2015-01-05", "--to", "2015-01-19"),
     "--from 2015-01-05 is before the start date of opencity_311"),
    (("opencity_311", "--from", "2026-10-05", "--to", "2099-01-05"),
     "ends in the future"),
    (("opencity_311", "--from", "2026-10-06", "--to", "2026-10-12"),
     "no interval of opencity_311's schedule starts in [2026-10-06, 2026-10-12)"),
])
def test_bad_ranges_fail_loudly_before_running(sample_raw, tmp_path, args, message):
    out = tmp_path / "run"
    proc = _run(args[0], "--raw", str(sample_raw), "--out", str(out), *args[1:])
    assert proc.returncode == 1
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (out / "catalog").exists() and not (out / "manifests").exists()
