"""Architecture contract: stage packages (transforms, privacy, expectations, publish) import
only opencity.errors / opencity.io and their own modules (import-linter, pyproject.toml).

Existing violations are listed as ``ignore_imports`` in pyproject.toml; a new one fails here.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _lint_imports() -> str:
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.fail("lint-imports is missing: install the dev extra (scripts/setup)")
    return exe


def test_import_contracts_hold():
    proc = subprocess.run([_lint_imports(), "--no-cache"], check=False, cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "2 kept, 0 broken" in proc.stdout


def test_a_new_violation_is_caught(tmp_path):
    """The contract can fail: a stage module importing opencity.settings breaks it."""
    import os

    probe = REPO / "publish" / "_archprobe_tmp.py"
    probe.write_text("import opencity.settings  # noqa: F401\n")
    try:
        proc = subprocess.run([_lint_imports(), "--no-cache"], check=False, cwd=REPO, capture_output=True,
                              text=True, timeout=120, env={**os.environ})
    finally:
        probe.unlink()
    assert proc.returncode != 0
    assert "publish._archprobe_tmp -> opencity.settings" in proc.stdout
