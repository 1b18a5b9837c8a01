"""opencity.io.staged_dir: a folder's new files appear together or not at all (issue 23
item 7: a kill right after the spend left mobility outputs without their privacy.json)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from opencity.io import staged_dir


def _tree(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def test_success_switches_in_and_keeps_what_it_did_not_write(tmp_path):
    out = tmp_path / "release"
    (out / "_run").mkdir(parents=True)
    (out / "_run" / "report.json").write_text("first run")
    (out / "a.parquet").write_text("old a")
    with staged_dir(out) as st:
        assert st.parent == tmp_path and st.name.startswith(".release.")
        (st / "a.parquet").write_text("new a")
        (st / "privacy.json").write_text("{}")
        assert _tree(out) == {"_run/report.json": b"first run", "a.parquet": b"old a"}
    assert _tree(out) == {"_run/report.json": b"first run", "a.parquet": b"new a",
                          "privacy.json": b"{}"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["release"]  # no leftover


def test_failure_leaves_the_folder_as_it_was(tmp_path):
    out = tmp_path / "release"
    out.mkdir()
    (out / "a.parquet").write_text("old a")
    with pytest.raises(RuntimeError), staged_dir(out) as st:
        (st / "a.parquet").write_text("new a")
        raise RuntimeError("killed before privacy.json")
    assert _tree(out) == {"a.parquet": b"old a"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["release"]
    with pytest.raises(RuntimeError), staged_dir(tmp_path / "new") as st:
        (st / "a.parquet").write_text("a")
        raise RuntimeError("boom")
    assert not (tmp_path / "new").exists()


_WRITER = """
import sys, time
from pathlib import Path
from opencity.io import staged_dir
with staged_dir(Path(sys.argv[1])) as st:
    for i in range(200):
        (st / f"part-{i}.parquet").write_bytes(b"x" * 1000)
        time.sleep(0.002)
    (st / "privacy.json").write_text("{}")
"""


@pytest.mark.parametrize("delay", [0.05, 0.15, 0.3])
def test_a_killed_writer_never_leaves_files_without_privacy_json(tmp_path, delay):
    out = tmp_path / "release"
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(out)])
    deadline = time.monotonic() + 30
    while not any(tmp_path.glob(".release.*.tmp")) and proc.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.005)
    time.sleep(delay)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    names = {p.name for p in out.iterdir()} if out.exists() else set()
    assert not names or ("privacy.json" in names and len(names) == 201), sorted(names)[:5]
