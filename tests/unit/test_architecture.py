"""Architecture contract (import-linter, pyproject.toml): stage packages (transforms, privacy,
expectations, publish, kpi) import only opencity.errors / opencity.io and their own modules
(kpi also the DP engine, privacy.dp); opencity.errors / opencity.io import no stage and no
other opencity module; and no contract has an ``ignore_imports`` exception.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
STAGES = ("transforms", "privacy", "expectations", "publish", "kpi")
ALLOWED_FROM_OPENCITY = {"opencity", "opencity.errors", "opencity.io"}


def _contracts() -> list[dict]:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    return config["tool"]["importlinter"]["contracts"]


def _lint_imports() -> str:
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.fail("lint-imports is missing: install the dev extra (scripts/setup)")
    return exe


def _run_lint() -> subprocess.CompletedProcess:
    return subprocess.run([_lint_imports(), "--no-cache"], check=False, cwd=REPO,
                          capture_output=True, text=True, timeout=120, env={**os.environ})


def test_import_contracts_hold():
    proc = _run_lint()
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert f"{len(_contracts())} kept, 0 broken" in proc.stdout
    assert "ignored imports" not in proc.stdout


def test_no_contract_has_exceptions_and_every_stage_is_covered():
    contracts = _contracts()
    assert [c["name"] for c in contracts if c.get("ignore_imports")] == []
    forbidden_opencity = [c for c in contracts if c["type"] == "forbidden"
                          and "opencity.settings" in c["forbidden_modules"]]
    assert any(set(STAGES) <= set(c["source_modules"]) for c in forbidden_opencity)
    assert any({"opencity.io", "opencity.errors"} <= set(c["source_modules"])
               and set(STAGES) <= set(c["forbidden_modules"]) for c in forbidden_opencity)


def _graph():
    grimp = pytest.importorskip("grimp")
    return grimp.build_graph("opencity", *STAGES)


def test_stages_import_no_opencity_module_but_errors_and_io():
    """Checked on the import graph itself, so an opencity module added after the contract's
    list was written is forbidden too (the list in pyproject.toml cannot go stale)."""
    graph = _graph()
    bad = []
    for stage in STAGES:
        for module in graph.find_descendants(stage) | {stage}:
            for imported in graph.find_modules_directly_imported_by(module):
                if imported.split(".")[0] == "opencity" and imported not in ALLOWED_FROM_OPENCITY:
                    bad.append(f"{module} -> {imported}")
    assert bad == []
    for leaf in ("opencity.errors", "opencity.io"):
        leaked = [m for m in graph.find_modules_directly_imported_by(leaf)
                  if m.split(".")[0] in STAGES or (m.startswith("opencity")
                                                   and m not in ALLOWED_FROM_OPENCITY)]
        assert leaked == [], leaf


def test_stages_do_not_import_each_other_kpi_only_the_dp_engine():
    graph = _graph()
    bad = []
    for stage in STAGES:
        allowed = {stage} | ({"privacy.dp"} if stage == "kpi" else set())
        for module in graph.find_descendants(stage) | {stage}:
            for imported in graph.find_modules_directly_imported_by(module):
                top = imported.split(".")[0]
                if top in STAGES and not any(imported == a or imported.startswith(a + ".")
                                             for a in allowed):
                    bad.append(f"{module} -> {imported}")
    assert bad == []


def test_a_new_violation_is_caught():
    """The contract can fail: a stage module importing opencity.settings breaks it."""
    probe = REPO / "publish" / "_archprobe_tmp.py"
    probe.write_text("import opencity.settings  # noqa: F401\n")
    try:
        proc = _run_lint()
    finally:
        probe.unlink()
    assert proc.returncode != 0
    assert "publish._archprobe_tmp -> opencity.settings" in proc.stdout


def test_a_kpi_import_of_another_stage_is_caught():
    probe = REPO / "kpi" / "_archprobe_tmp.py"
    probe.write_text("import transforms.schemas  # noqa: F401\n")
    try:
        proc = _run_lint()
    finally:
        probe.unlink()
    assert proc.returncode != 0
    assert "kpi._archprobe_tmp -> transforms.schemas" in proc.stdout


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
