"""Run manifests: what a run read, wrote, and with which parameters and code version."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from opencity import __version__
from opencity.io import write_json_atomic
from publish.base import sha256_file


def code_version() -> dict[str, str]:
    """Package version plus the git commit of the checkout, when there is one."""
    out = {"opencity": __version__}
    repo = Path(__file__).resolve().parent.parent
    if (repo / ".git").exists():
        try:
            commit = subprocess.run(
                ["git", "-C", str(repo), "rev-parse", "HEAD"],
                capture_output=True, text=True, timeout=5, check=True,
            ).stdout.strip()
            dirty = subprocess.run(
                ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                capture_output=True, text=True, timeout=5, check=True,
            ).stdout.strip()
            out["git_commit"] = commit + ("-dirty" if dirty else "")
        except (OSError, subprocess.SubprocessError):
            pass
    return out


def input_hashes(paths: list[str | Path]) -> dict[str, str]:
    """SHA-256 of every input file (directories: each Parquet file inside, sorted)."""
    out: dict[str, str] = {}
    for p in map(Path, paths):
        files = sorted(p.rglob("*.parquet")) if p.is_dir() else [p]
        for f in files:
            out[f.name if not p.is_dir() else f"{p.name}/{f.relative_to(p)}"] = sha256_file(f)
    return out


def write_manifest(path: Path, manifest: dict[str, Any]) -> Path:
    """Write a manifest as JSON (atomically), adding the code version."""
    body = {"code_version": code_version(), **manifest}
    # run manifests (``<run dir>/manifests/``) are a restricted zone of the run directory
    return write_json_atomic(body, path, restricted=True, sort_keys=True, default=str)
