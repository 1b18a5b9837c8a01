"""Publishing processes for the crash and concurrency tests of the local catalog.

Run as a script (``python catalog_worker.py SPEC.json``), it publishes the releases described
in SPEC into a LocalCatalog and prints ``ready`` just before the first publish (so the parent
can SIGKILL it at a random instant of the publish) and ``done <seconds>`` at the end.
``publish_loop`` is the body of one concurrent publisher (multiprocessing, spawn).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def build_release(spec: dict):
    """A DatasetRelease from its JSON description (see ``release_spec`` in the tests)."""
    from publish.base import DatasetRelease, Field, Resource

    return DatasetRelease(
        name=spec["name"], title=spec["title"], description=spec["description"],
        resources=tuple(Resource(Path(r["path"]), r["name"], r["format"], r.get("description", ""),
                                 r["partition"]) for r in spec["resources"]),
        fields=tuple(Field(**f) for f in spec.get("fields", [])),
        privacy=spec["privacy"], temporal_coverage=tuple(spec["temporal_coverage"]),
        accrual_periodicity="R/P1D", provenance=spec.get("provenance", {}),
    )


def publish_loop(barrier, roots: list[str], spec: dict) -> None:
    """For each catalog root in turn: wait for every publisher, then publish ``spec``."""
    from publish.local import LocalCatalog

    release = build_release(spec)
    for root in roots:
        barrier.wait()
        LocalCatalog(root).publish(release)


def main(argv: list[str]) -> int:
    spec = json.loads(Path(argv[1]).read_text())
    from publish.local import LocalCatalog

    releases = [build_release(s) for s in spec["releases"]]
    catalog = LocalCatalog(spec["catalog"])
    print("ready", flush=True)
    t0 = time.perf_counter()
    for rel in releases:
        catalog.publish(rel)
    print(f"done {time.perf_counter() - t0:.4f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
