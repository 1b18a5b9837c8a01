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


# --- One atomic write (issue 19 item 4) -------------------------------------------------------
# Every write of a file someone else reads goes through opencity.io (temp + fsync + rename, with
# the zone's modes). No other module renames or replaces files itself.

ATOMIC_WRITE_HOME = "opencity/io.py"
# path -> reason; only renames that are not an atomic write of the project's files.
RENAME_ALLOWED = {
    "scripts/ckan/solr_standin.py": "a standalone, standard-library-only Solr stand-in for the "
                                    "development CKAN (runs under any Python 3.9+ without "
                                    "opencity installed); its index file is not project data",
}
_SCANNED = ("opencity", "transforms", "privacy", "expectations", "publish", "kpi",
            "sample_data", "dags", "scripts", "bench")


def _renames(source: str) -> list[tuple[int, str]]:
    """Calls in ``source`` that rename or replace a file: ``os.replace``/``os.rename``/
    ``os.renames``/``shutil.move``, any ``.rename(...)``, and ``.replace(x)`` with exactly one
    positional argument and no keywords (``Path.replace``; ``str.replace`` takes two,
    ``datetime``/``dataclasses.replace`` take keywords)."""
    import ast

    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        name, owner = node.func.attr, node.func.value
        owner_name = owner.id if isinstance(owner, ast.Name) else ""
        if owner_name in ("os", "shutil") and name in ("replace", "rename", "renames", "move"):
            found.append((node.lineno, f"{owner_name}.{name}"))
        elif name == "rename":
            found.append((node.lineno, ".rename"))
        elif name == "replace" and len(node.args) == 1 and not node.keywords:
            found.append((node.lineno, ".replace"))
    return found


def _source_files() -> list[Path]:
    files = []
    for top in _SCANNED:
        files.extend(p for p in (REPO / top).rglob("*.py") if ".venv" not in p.parts)
    return sorted(files)


def test_only_opencity_io_renames_files():
    offenders = []
    for path in _source_files():
        rel = path.relative_to(REPO).as_posix()
        if rel == ATOMIC_WRITE_HOME or rel in RENAME_ALLOWED:
            continue
        offenders += [f"{rel}:{line}: {what}"
                      for line, what in _renames(path.read_text(encoding="utf-8"))]
    assert not offenders, ("write files through opencity.io (write_atomic, write_text_atomic, "
                           "write_json_atomic, replace_dir, rename_dir, replace_symlink, "
                           "move_aside) instead of renaming them here:\n" + "\n".join(offenders))


def test_rename_allow_list_is_still_needed():
    """An allow-list entry whose file no longer renames anything must be removed."""
    for rel in RENAME_ALLOWED:
        path = REPO / rel
        assert path.is_file(), f"{rel} is allowed to rename files but does not exist"
        assert _renames(path.read_text(encoding="utf-8")), f"{rel} no longer renames files"


@pytest.mark.parametrize("code", [
    "import os\nos.replace(a, b)\n",
    "import os\nos.rename(a, b)\n",
    "import shutil\nshutil.move(a, b)\n",
    "tmp.replace(path)\n",
    "Path(tmp).rename(path)\n",
])
def test_the_rename_scan_can_fail(code):
    assert _renames(code)


@pytest.mark.parametrize("code", [
    "s.replace('a', 'b')\n",
    "day.replace(day=1)\n",
    "dataclasses.replace(settings, run_dir='x')\n",
    "'''os.replace(tmp, path) in a docstring'''\n",
])
def test_the_rename_scan_ignores_other_replaces(code):
    assert not _renames(code)
