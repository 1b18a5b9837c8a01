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
