#!/usr/bin/env python3
"""Mutation testing of the privacy core (mutmut), module by module, with a kill-rate gate.

    .venv/bin/python scripts/mutation.py [--only MODULE ...] [--out mutation-results.json]

For every entry of tests/mutation/modules.yaml (a source file, the fast test selection that
guards it, the functions to mutate and the minimum kill rate), the repository's tracked files
are copied to a scratch directory, mutmut mutates that one file and runs only the listed tests
against each mutant. A mutant listed in tests/mutation/equivalent.yaml (with the reason it
cannot change behaviour) is left out of the rate; every other survivor is printed as a diff.
Exit status 1 when a module's kill rate is below its minimum, so CI fails on weak tests.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / "tests" / "mutation" / "modules.yaml"
EQUIVALENT = REPO / "tests" / "mutation" / "equivalent.yaml"
MUTMUT = Path(sys.executable).with_name("mutmut")
PACKAGES = ("opencity", "transforms", "privacy", "expectations", "publish", "kpi", "sample_data",
            "dags", "bench")


def _copy_repo(dst: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                           cwd=REPO, check=True, capture_output=True).stdout.split(b"\0")
    for raw in files:
        if not raw:
            continue
        rel = Path(raw.decode())
        src = REPO / rel
        if not src.is_file():
            continue
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst / rel)


def _config_block(entry: dict) -> str:
    src_top = Path(entry["module"]).parts[0] + "/"
    also = [f"{d}/" for d in PACKAGES if f"{d}/" != src_top]
    return (
        "\n[tool.mutmut]\n"
        f"source_paths = [{json.dumps(src_top)}]\n"
        f"only_mutate = [{json.dumps(entry['module'])}]\n"
        f"pytest_add_cli_args_test_selection = {json.dumps(list(entry['tests']))}\n"
        'pytest_add_cli_args = ["-p", "no:cacheprovider", "-q", "-x", "-m", "not ckan"]\n'
        f"also_copy = {json.dumps(also)}\n"
        "use_git_change_detection = false\n"
    )


def _results(work: Path) -> dict[str, str]:
    out = subprocess.run([str(MUTMUT), "results", "--all", "true"], cwd=work,
                         capture_output=True, text=True, check=True).stdout
    status = {}
    for line in out.splitlines():
        name, sep, state = line.strip().rpartition(": ")
        if sep and name:
            status[name] = state.strip()
    return status


def _wanted(name: str, functions: list[str] | None) -> bool:
    if not functions:
        return True
    return any(fnmatch.fnmatch(name, pat) for pat in functions)


def run_module(entry: dict, equivalent: dict[str, str], keep: bool) -> dict:
    t0 = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="opencity-mutation-"))
    try:
        _copy_repo(work)
        with open(work / "pyproject.toml", "a", encoding="utf-8") as fh:
            fh.write(_config_block(entry))
        env = {**os.environ, "PYTHONWARNINGS": "ignore", "OPENCITY_STRICT_SKIPS": "0"}
        module_dotted = entry["module"].removesuffix(".py").replace("/", ".")
        names = [f"{module_dotted}.{f}" for f in entry.get("functions") or []]
        cmd = [str(MUTMUT), "run", "--max-children", str(entry.get("children", os.environ.get("OPENCITY_MUTATION_CHILDREN", 2))), *names]
        proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True,
                              timeout=entry.get("timeout", 1800))
        if proc.returncode not in (0, 1, 2):  # mutmut exits non-zero when mutants survive
            raise RuntimeError(f"mutmut failed on {entry['module']}: {proc.stderr[-2000:]}")
        status = {k: v for k, v in _results(work).items()
                  if _wanted(k, names) and v != "not checked"}
        survivors = sorted(k for k, v in status.items() if v in ("survived", "no tests"))
        equiv = [s for s in survivors if s in equivalent]
        open_survivors = [s for s in survivors if s not in equivalent]
        killed = sum(1 for v in status.values() if v in ("killed", "timeout", "segfault"))
        counted = len(status) - len(equiv)
        rate = killed / counted if counted else 1.0
        diffs = {}
        for name in open_survivors:
            diffs[name] = subprocess.run([str(MUTMUT), "show", name], cwd=work,
                                         capture_output=True, text=True).stdout
        return {
            "module": entry["module"],
            "tests": entry["tests"],
            "mutants": len(status),
            "killed": killed,
            "equivalent": len(equiv),
            "survived": len(open_survivors),
            "kill_rate": round(rate, 4),
            "min_kill_rate": entry.get("min_kill_rate", 0.9),
            "seconds": round(time.monotonic() - t0, 1),
            "survivors": diffs,
        }
    finally:
        if keep:
            print(f"mutation: kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="*", help="modules (paths) to run; default: all configured")
    ap.add_argument("--out", default="mutation-results.json", help="JSON result file")
    ap.add_argument("--keep", action="store_true", help="keep the scratch copies")
    ap.add_argument("--ci", action="store_true",
                    help="only the modules marked for CI (ci: true, the default); the others "
                         "have test selections too slow for every CI run")
    args = ap.parse_args(argv)
    entries = yaml.safe_load(CONFIG.read_text(encoding="utf-8"))["modules"]
    equivalent = (yaml.safe_load(EQUIVALENT.read_text(encoding="utf-8")) or {}) \
        if EQUIVALENT.exists() else {}
    if args.only:
        entries = [e for e in entries if e["module"] in args.only]
    if args.ci:
        entries = [e for e in entries if e.get("ci", True)]
    results, failed = [], False
    for entry in entries:
        print(f"mutation: {entry['module']} ...", file=sys.stderr, flush=True)
        res = run_module(entry, equivalent, args.keep)
        results.append(res)
        ok = res["kill_rate"] >= res["min_kill_rate"]
        failed |= not ok
        print(f"mutation: {res['module']}: {res['killed']}/{res['mutants'] - res['equivalent']} "
              f"killed ({res['kill_rate']:.1%}, {res['equivalent']} equivalent, minimum "
              f"{res['min_kill_rate']:.0%}) in {res['seconds']} s {'ok' if ok else 'TOO LOW'}",
              file=sys.stderr, flush=True)
        for name, diff in res["survivors"].items():
            print(f"  survived: {name}\n{diff}", file=sys.stderr)
    Path(args.out).write_text(json.dumps({"modules": results}, indent=2), encoding="utf-8")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
