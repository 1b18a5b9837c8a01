"""Run manifests: what a run read, wrote, and with which parameters and code version."""

from __future__ import annotations

import subprocess
from datetime import datetime
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


# The sections every release DAG's manifest has (None where a DAG has nothing to say), so the
# manifests of all DAGs read alike; a DAG may add its own sections (e.g. 311's microdata).
RELEASE_SECTIONS = ("parameters", "guard", "quarantine", "outputs", "validation")


def write_run_manifest(path: Path, *, dag_id: str, run_id: str, start: datetime,
                       end: datetime, inputs: dict[str, str], row_counts: dict[str, Any],
                       published: Any = None, release: bool = True,
                       **sections: Any) -> Path:
    """Write the manifest of one DAG run and partition: the one way every DAG writes it.

    The envelope (``dag_id``, ``run_id``, ``partition`` ``dt=YYYY-MM-DD`` of ``start``,
    ``data_interval`` as ISO 8601 ``start``/``end``, ``inputs`` file -> SHA-256,
    ``row_counts``, ``published``, ``code_version``) is the same for all DAGs. A release
    manifest (``release=True``) also has every key of RELEASE_SECTIONS (None when the DAG
    passes none); ``sections`` adds the DAG's own keys (e.g. ``status``/``reason`` of a
    skipped period). Only counts, parameters, hashes and paths belong here: never a row or
    an identifier (the manifest is read by reviewers and shipped with the run).
    """
    body: dict[str, Any] = {
        "dag_id": dag_id, "run_id": run_id, "partition": f"dt={start:%Y-%m-%d}",
        "data_interval": {"start": start.isoformat(), "end": end.isoformat()},
        "inputs": inputs, "row_counts": row_counts, "published": published,
    }
    if release:
        body.update(dict.fromkeys(RELEASE_SECTIONS))
    reserved = set(body) - set(RELEASE_SECTIONS)
    clash = reserved & set(sections)
    if clash:
        raise ValueError(f"write_run_manifest: {sorted(clash)} are envelope keys; this is a bug")
    body.update(sections)
    return write_manifest(path, body)
