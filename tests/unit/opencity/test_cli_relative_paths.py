"""Issue 23 item 9: every command resolves run directories to absolute paths first.

The README's own example, ``opencity publish opencity-demo --target local``, run with a
relative RUN_DIR used to leave the local catalog's ``current`` link pointing at a deleted
snapshot (FileNotFoundError, exit 1 with a traceback)."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from opencity.cli import absolute_paths, main
from opencity.settings import Settings
from publish.base import DatasetRelease, Field, Resource
from publish.local import LocalCatalog


def _release(root: Path, part: str, values: list[int]) -> DatasetRelease:
    f = root / "src" / part / "part-0.parquet"
    f.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"district_id": ["D01", "D02"], "requests": values}), f)
    start = part.removeprefix("dt=")
    return DatasetRelease(
        name="opencity-test", title="Test", description="d",
        resources=(Resource(f, "counts", "parquet", "week", part),),
        fields=(Field("district_id", "string"), Field("requests", "integer")),
        privacy={"privacy_method": "small_count_suppression", "suppression_threshold": 15},
        temporal_coverage=(start, start), provenance={"run_id": "r1"})


def _partitions(ddir: Path) -> list[str]:
    pkg = json.loads((ddir / "package.json").read_text())
    return sorted({r["partition"] for r in pkg["resources"]})


def test_publish_local_with_a_relative_run_dir(tmp_path, monkeypatch, capsys):
    run = tmp_path / "opencity-demo"
    cat = LocalCatalog(run / "catalog")
    cat.publish(_release(run, "dt=2026-10-05", [20, 30]))
    cat.publish(_release(run, "dt=2026-10-12", [25, 35]))
    monkeypatch.chdir(tmp_path)
    for _ in range(2):  # a rerun too: the catalog must stay readable after each
        assert main(["publish", "opencity-demo", "--target", "local"]) == 0
        ddir = run / "catalog" / "opencity-test"
        assert (ddir / "current").resolve().is_dir(), "current points at a deleted snapshot"
        assert _partitions(ddir) == ["dt=2026-10-05", "dt=2026-10-12"]
        for p in ("dt=2026-10-05", "dt=2026-10-12"):
            assert (ddir / "data" / "counts" / p / "part-0.parquet").is_file()
    out = capsys.readouterr().out
    assert str(run / "catalog" / "opencity-test") in out  # absolute in what it prints


def test_path_arguments_become_absolute_urls_stay(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = absolute_paths(argparse.Namespace(run_dir=Path("balt"), out=Path("../x/./r"),
                                             raw_dir="s3://bucket/raw", month="2026-10"))
    assert args.run_dir == tmp_path / "balt"
    assert args.out == Path(os.path.abspath(tmp_path / ".." / "x" / "r"))
    assert args.raw_dir == "s3://bucket/raw" and args.month == "2026-10"


def test_settings_make_local_run_dirs_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OPENCITY_RUN_DIR", "rel/run")
    s = Settings.resolve()
    assert s.run_dir == str(tmp_path / "rel" / "run")
    assert s.raw_dir == str(tmp_path / "rel" / "run" / "raw")
    s = Settings.resolve({"run_dir": "s3://opencity-runs/city", "raw_dir": "landing"})
    assert s.run_dir == "s3://opencity-runs/city" and s.raw_dir == str(tmp_path / "landing")


def test_commands_tighten_only_run_directories_they_write(tmp_path, monkeypatch, capsys):
    """Issue 23 item 6 at the command line: a writing command leaves its run directory's
    unpublished files owner-only; a reader (budget) or a folder that is not a run directory
    is never changed."""
    import stat

    old = os.umask(0o022)
    try:
        run = tmp_path / "opencity-demo"
        LocalCatalog(run / "catalog").publish(_release(run, "dt=2026-10-05", [20, 30]))
        csv = run / "csv" / "opencity-test" / "dt=2026-10-05" / "part-0.csv"
        csv.parent.mkdir(parents=True)
        csv.write_text("district_id,requests\n")
        home = tmp_path / "home"  # not a run directory
        (home / "notes").mkdir(parents=True)
        (home / "notes" / "todo.txt").write_text("x")
        assert main(["budget", str(run)]) == 0
        assert stat.S_IMODE(csv.stat().st_mode) == 0o644  # a reader changes nothing
        assert main(["budget", str(home)]) == 0
        assert main(["publish", str(run), "--target", "local"]) == 0
        assert stat.S_IMODE(csv.stat().st_mode) == 0o600
        assert stat.S_IMODE((run / "csv").stat().st_mode) == 0o700
        pkg = (run / "catalog" / "opencity-test" / "package.json").resolve()
        assert pkg.stat().st_mode & stat.S_IROTH  # published: stays readable
        assert stat.S_IMODE((home / "notes" / "todo.txt").stat().st_mode) == 0o644
    finally:
        os.umask(old)
