"""Leftovers of killed runs in a dataset's partition tree (``outputs/<dataset>/``, ``csv/...``).

``opencity.io.replace_dir`` moves ``.<partition>.<id>.old`` aside while it swaps a partition
and stages into ``.<partition>.staging``; temporary files are ``.<name>.<id>.tmp``. A run
killed at the wrong instant leaves them behind, where a Hive-partitioned reader (Spark, DuckDB
``hive_partitioning``) may trip over them. ``clean_partition_leftovers`` removes them: those of
the partition just committed at once (the committing run owns that partition), the others
only once they are older than ``max_age`` (another run may still be using its staging folder,
e.g. waiting for an approval).
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

log = logging.getLogger(__name__)

LEFTOVER_SUFFIXES = (".old", ".tmp", ".staging")
DEFAULT_MAX_AGE_S = 24 * 3600.0


def _is_leftover(path: Path) -> bool:
    return path.name.startswith(".") and path.name.endswith(LEFTOVER_SUFFIXES)


def clean_partition_leftovers(partition_dir: str | Path, *,
                              max_age_s: float = DEFAULT_MAX_AGE_S) -> list[Path]:
    """Remove leftovers next to and inside a committed partition folder.

    Args:
        partition_dir: the partition just committed, e.g. ``outputs/<dataset>/dt=2026-10-05``.
        max_age_s: leftovers of OTHER partitions are removed once older than this (seconds,
            by modification time); those of this partition (``.<partition>.*``) and
            temporary files inside it always.

    Returns:
        The paths removed (names only reach the log, never file contents).
    """
    part = Path(partition_dir)
    removed: list[Path] = []
    now = time.time()
    candidates = []
    if part.parent.is_dir():
        candidates += [p for p in part.parent.iterdir() if _is_leftover(p)]
    if part.is_dir():
        candidates += [p for p in part.iterdir() if _is_leftover(p)]
    for path in candidates:
        own = path.parent == part or path.name.startswith(f".{part.name}.")
        try:
            age = now - path.lstat().st_mtime
        except FileNotFoundError:
            continue
        if not own and age < max_age_s:
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    if removed:
        log.info("removed %d leftover(s) of killed runs next to %s: %s", len(removed), part,
                 ", ".join(p.name for p in removed))
    return removed
