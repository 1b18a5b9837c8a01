"""Parameter validation, the `opencity sample-data` command and tiny scales."""

from __future__ import annotations

import math
import os
from datetime import date
from pathlib import Path

import pytest

from opencity.cli import main
from opencity.errors import ConfigError
from sample_data import SampleConfig, generate


@pytest.mark.parametrize("kwargs", [
    {"scale": 0}, {"scale": -1.0}, {"scale": math.nan}, {"scale": math.inf}, {"scale": "1"},
    {"scale": True}, {"scale": 1e6}, {"days": 0}, {"days": 1.5}, {"days": 367},
    {"seed": -1}, {"seed": 1.0}, {"start": "2026-10-05"}, {"chunk_rows": 0},
])
def test_invalid_parameters_are_config_errors(kwargs):
    with pytest.raises(ConfigError):
        SampleConfig(**kwargs)


def test_output_path_that_is_a_file_is_a_config_error(tmp_path):
    target = tmp_path / "taken"
    target.write_text("x")
    with pytest.raises(ConfigError, match="not a directory"):
        generate(target, scale=0.01, days=1, progress=False)


def test_uncreatable_output_dir_is_a_config_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="cannot create output directory"):
        generate(tmp_path / "file" / "sub", scale=0.01, days=1, progress=False)


def test_read_only_output_dir_is_a_config_error(tmp_path):
    """A directory the user cannot write to is a ConfigError. Root ignores permission bits, so
    as root the check runs with the real and effective user switched to 'nobody' (65534) for
    the duration of the call (the saved user id stays root, so it is switched back)."""
    as_root = os.geteuid() == 0
    base = tmp_path
    if as_root:  # 'nobody' must be able to reach the directory: not under pytest's 0700 tree
        import tempfile

        base = Path(tempfile.mkdtemp(prefix="opencity-ro-"))
        base.chmod(0o755)
    ro = base / "ro"
    ro.mkdir(mode=0o500)
    try:
        if as_root:
            os.setresuid(65534, 65534, 0)
        with pytest.raises(ConfigError, match="not writable"):
            generate(ro, scale=0.01, days=1, progress=False)
    finally:
        if as_root:
            os.setresuid(0, 0, 0)
        ro.chmod(0o700)
        if as_root:
            import shutil

            shutil.rmtree(base)


def test_cli_generates_and_prints_a_summary(tmp_path, capsys):
    out = tmp_path / "raw"
    code = main(["sample-data", "--out", str(out), "--seed", "5", "--scale", "0.02",
                 "--days", "2", "--start", "2026-03-28", "--quiet"])
    assert code == 0
    printed = capsys.readouterr().out
    assert str(out.resolve()) in printed
    assert "cdr/part-*.parquet" in printed and "service_requests/requests.csv" in printed
    assert (out / "waste" / "pickups.parquet").is_file()


@pytest.mark.parametrize("argv, message", [
    (["--scale", "0"], "scale must be > 0"),
    (["--scale", "nan"], "scale must be > 0"),
    (["--days", "0"], "days must be an integer from 1"),
    (["--seed", "-3"], "seed must be a non-negative integer"),
])
def test_cli_bad_values_give_a_clear_error_not_a_traceback(tmp_path, capsys, argv, message):
    code = main(["sample-data", "--out", str(tmp_path / "o"), "--quiet", *argv])
    err = capsys.readouterr().err
    assert code == 1
    assert message in err and "Traceback" not in err


@pytest.mark.parametrize("argv", [["--scale", "big"], ["--start", "05/10/2026"],
                                  ["--days", "two"]])
def test_cli_unparsable_values_are_usage_errors(tmp_path, capsys, argv):
    with pytest.raises(SystemExit) as exc:
        main(["sample-data", "--out", str(tmp_path), *argv])
    assert exc.value.code == 2
    assert "expected" in capsys.readouterr().err


def test_help_is_readable(capsys):
    with pytest.raises(SystemExit):
        main(["sample-data", "--help"])
    text = capsys.readouterr().out
    for word in ("--out", "--seed", "--scale", "--start", "--days", "personal data"):
        assert word in text


def test_tiny_scale_and_single_day_still_write_every_file(tmp_path):
    counts = generate(tmp_path, seed=1, scale=0.001, days=1, start=date(2026, 10, 10),
                      progress=False)
    tops = {k.split("/part-")[0] for k in counts}
    assert tops == {"city/districts.csv", "city/towers.csv", "city/request_types.csv", "cdr",
                    "service_requests/requests.csv", "meters/registry.csv", "meters/readings",
                    "transit/stops.csv", "transit/taps.parquet", "waste/pickups.parquet"}


def test_progress_goes_to_stderr_only_when_asked(tmp_path, capsys):
    generate(tmp_path / "a", seed=2, scale=0.02, days=1, progress=True)
    shown = capsys.readouterr()
    assert "CDR events" in shown.err and shown.out == ""
    generate(tmp_path / "b", seed=2, scale=0.02, days=1, progress=False)
    assert capsys.readouterr().err == ""
