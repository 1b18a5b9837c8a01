"""opencity.manifest.write_run_manifest: the one writer of DAG run manifests (issue 19)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from opencity.manifest import RELEASE_SECTIONS, write_run_manifest

START, END = datetime(2026, 10, 5, tzinfo=UTC), datetime(2026, 10, 12, tzinfo=UTC)
ENVELOPE = {"dag_id", "run_id", "partition", "data_interval", "inputs", "row_counts",
            "published", "code_version"}


def _write(tmp_path, **kw):
    path = write_run_manifest(tmp_path / "m" / "dt=2026-10-05.json", dag_id="d", run_id="r",
                              start=START, end=END, inputs={"a.csv": "0" * 64},
                              row_counts={"rows_in": 1}, **kw)
    return json.loads(path.read_text())


def test_a_release_manifest_has_the_envelope_and_every_release_section(tmp_path):
    doc = _write(tmp_path, outputs={"out_dir": "x"}, kpis={"rows": 3})
    assert set(doc) == ENVELOPE | set(RELEASE_SECTIONS) | {"kpis"}
    assert doc["partition"] == "dt=2026-10-05" and doc["outputs"] == {"out_dir": "x"}
    assert doc["data_interval"] == {"start": "2026-10-05T00:00:00+00:00",
                                    "end": "2026-10-12T00:00:00+00:00"}
    assert doc["guard"] is None and doc["published"] is None
    assert doc["code_version"]["opencity"]


def test_a_non_release_manifest_has_only_the_envelope_and_its_own_keys(tmp_path):
    doc = _write(tmp_path, release=False, status="skipped", reason="no input")
    assert set(doc) == ENVELOPE | {"status", "reason"}


@pytest.mark.parametrize("key", ["dag_id", "partition", "inputs"])
def test_a_section_cannot_overwrite_the_envelope(tmp_path, key):
    with pytest.raises(TypeError if key in ("dag_id", "inputs") else ValueError):
        _write(tmp_path, **{key: "x"})


def test_the_311_skipped_manifest_keeps_its_keys(tmp_path):
    from opencity.pipelines import service_requests as p
    from opencity.settings import Settings

    skipped = {"skipped": True, "reason": p.SKIPPED_REASON}
    path = p.manifest(Settings(run_dir=str(tmp_path / "run")), "opencity_311", "r", START, END,
                      {"rows_in": 0, "rows_out": 0}, skipped, skipped, {"skipped": True})
    assert set(json.loads(Path(path).read_text())) == ENVELOPE | {"status", "reason"}
