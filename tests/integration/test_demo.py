"""The README's main job: `opencity demo --out DIR` end to end on generated sample data."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.airflow, pytest.mark.slow]


def test_demo_end_to_end(tmp_path):
    out = tmp_path / "demo"
    cmd = [sys.executable, "-m", "opencity.cli", "demo", "--out", str(out), "--scale", "0.5"]
    env = {k: v for k, v in os.environ.items()
           if k != "OPENCITY_HMAC_KEY" and not k.startswith("AIRFLOW")}
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=1500,
                          env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "throwaway" in proc.stderr  # the demo says it generated a key
    for folder in ("raw", "clean", "quarantine", "outputs", "manifests", "catalog"):
        assert folder in proc.stdout
    summary = json.loads((out / "demo-summary.json").read_text())
    assert summary["dag_runs"] and all(r["state"] == "success" for r in summary["dag_runs"])
    manifests = sorted((out / "manifests").rglob("*.json"))
    assert manifests
    products = sorted((out / "outputs").rglob("*.parquet"))
    assert products
    catalog = sorted((out / "catalog").glob("*/package.json"))
    assert catalog
    # No raw identifier may reach any output, log or report: check every file of the run
    # except the landed raw inputs themselves (Parquet decoded, everything else as bytes).
    cols = ("requester_email", "requester_phone", "requester_name", "requester_address")
    raw = pacsv.read_csv(out / "raw" / "service_requests" / "requests.csv",
                         convert_options=pacsv.ConvertOptions(
                             column_types=dict.fromkeys(cols, pa.string())))
    identifiers = sorted({v for col in cols
                          for v in raw[col].to_pylist() if v and len(v) > 6})
    blobs = []
    for path in out.rglob("*"):
        if not path.is_file() or (out / "raw") in path.parents:
            continue
        if path.suffix == ".parquet":
            blobs.append(json.dumps(pq.read_table(path).to_pylist(), default=str).encode())
        else:
            blobs.append(path.read_bytes())
    everything = b"\n".join(blobs)
    leaked = [v for v in identifiers if v.encode() in everything]
    assert not leaked, f"{len(leaked)} raw identifiers found outside raw/"

    # Open-data standards: every package validates with `frictionless validate`, every
    # published column is described, and outputs/ reads as one Hive table per dataset.
    from catalog_checks import (
        frictionless_errors,
        hive_problems,
        undescribed_columns,
    )

    errors = frictionless_errors(out / "catalog")
    assert len(errors) == len(catalog)
    assert not any(errors.values()), errors
    assert not undescribed_columns(out / "catalog")
    assert not hive_problems(out / "outputs")
