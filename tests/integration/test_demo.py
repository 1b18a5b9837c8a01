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
    # Three whole months of sample data: 14 daily mobility runs and 2 weekly 311 runs over the
    # short window, one KPI run per month (issue 22: the dashboard shows a trend).
    runs = [r["dag_id"] for r in summary["dag_runs"]]
    assert (runs.count("cdr_mobility"), runs.count("opencity_311"),
            runs.count("opencity_kpi")) == (14, 2, 3)
    _check_kpi_months(out / "outputs" / "opencity-kpis")
    _check_od_cells(out / "outputs" / "opencity-cdr-mobility-daily")
    manifests = sorted((out / "manifests").rglob("*.json"))
    assert manifests
    products = sorted((out / "outputs").rglob("*.parquet"))
    assert products
    catalog = sorted((out / "catalog").glob("*/package.json"))
    assert catalog
    # The demo keeps its own state DB and names it; every account is within its cap and
    # equals the sum of its releases (issue 10: the per-person totals were never stated).
    from opencity.budget import budget_report, state_url_for

    assert state_url_for(out) == str(out / "state" / "state.sqlite")
    units = budget_report(state_url_for(out))["units"]
    assert {u["unit"] for u in units} >= {"subscriber", "household", "card", "requester"}
    for u in units:
        assert u["spent_epsilon"] == pytest.approx(sum(r["epsilon"] for r in u["releases"]))
        assert u["spent_epsilon"] <= u["cap_epsilon"] + 1e-9
        assert u["spent_delta"] <= u["cap_delta"] + 1e-12
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
            blobs.append(_parquet_text(path))
        else:
            blobs.append(path.read_bytes())
    leaked = _find_substrings(identifiers, b"\n".join(blobs))
    assert not leaked, f"{len(leaked)} raw identifiers found outside raw/"

    # Open-data standards: every package validates with `frictionless validate`, every
    # published column is described, and outputs/ reads as one Hive table per dataset.
    from catalog_checks import (
        catalog_load_problems,
        frictionless_errors,
        hive_problems,
        undescribed_columns,
    )

    errors = frictionless_errors(out / "catalog")
    assert len(errors) == len(catalog)
    assert not any(errors.values()), errors
    assert not undescribed_columns(out / "catalog")
    assert not hive_problems(out / "outputs")
    # Issue 22: every table loads whole from catalog/<dataset>/data/<table>/ and has CSV
    # copies; the districts have names.
    assert not catalog_load_problems(out / "catalog")
    import pandas as pd

    names = pd.read_parquet(out / "catalog" / "opencity-districts" / "data" / "districts")
    assert names["district_name"].notna().all() and len(names) >= 2
    # Issue 19: the one release protocol publishes what the four copies before it published:
    # the same datasets, partitions, resources, columns, key sets, privacy parameters and
    # statement keys (tests/data/demo_release_shape.json was recorded before the refactor).
    _check_release_shape(out)
    # Issue 20: the portal audits from what it published (the chain, files, per-person totals)
    proc = subprocess.run([sys.executable, "-m", "opencity.cli", "verify", str(out), "--json"],
                          check=False, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    assert report["ok"] and report["state_checked"] and report["published_chain_entries"] > 0


# Statement keys the refactor added on purpose (one PrivacyStatement type: its header on every
# statement; issue 19's closing note states them). Nothing was removed or renamed.
INTENDED_NEW_STATEMENT_ROOTS = {"statement_version", "dataset", "partition", "privacy_method",
                                "spent_per_unit", "spent", "epsilon", "delta", "products",
                                "policy_hash", "release_id"}


def _check_release_shape(out):
    from pathlib import Path

    from release_shape import release_shape

    expected = json.loads((Path(__file__).resolve().parents[1] / "data"
                           / "demo_release_shape.json").read_text())
    shape = release_shape(out)
    assert sorted(shape) == sorted(expected)
    for name, before in expected.items():
        after = shape[name]
        for key in before:
            if key != "statements":
                assert after[key] == before[key], (name, key)
        assert sorted(after["statements"]) == sorted(before["statements"]), name
        for part, stmt in before["statements"].items():
            new = after["statements"][part]
            added = set(new["keys"]) - set(stmt["keys"])
            assert set(stmt["keys"]) <= set(new["keys"]), (name, part)  # nothing removed
            assert {k.split(".")[0] for k in added} <= INTENDED_NEW_STATEMENT_ROOTS, added
            assert {k: v for k, v in new["params"].items() if k in stmt["params"]} == \
                stmt["params"], (name, part)


def _check_kpi_months(kpis):
    """Every month is a partition whose rows carry that period; a withheld KPI says why in
    its row; the last month's dashboard draws the three months."""
    parts = sorted(p.name for p in kpis.glob("dt=*"))
    assert parts == ["dt=2026-10-01", "dt=2026-11-01", "dt=2026-12-01"]
    for part in parts:
        rows = pq.read_table(kpis / part / "kpis.parquet").to_pylist()
        assert {r["period"] for r in rows} == {part[3:10]}
        for r in rows:
            withheld = r["method"] == "suppressed"
            assert (r["value"] is None) == withheld
            assert bool(r["withheld_reason"]) == withheld, r
    html = (kpis / parts[-1] / "dashboard.html").read_text()
    assert "City, 3 period(s)" in html
    assert all(m in html for m in ("2026-10", "2026-11", "2026-12"))


def _check_od_cells(mobility):
    """>= 50 published origin-destination cells on every day; every row has a status, and
    a row without a value says why."""
    days = sorted(mobility.glob("dt=*"))
    assert len(days) == 14
    for day in days:
        rows = pq.read_table(day / "od_matrix.parquet").to_pylist()
        assert {r["status"] for r in rows} <= {"published", "withheld"}
        published = [r for r in rows if r["status"] == "published"]
        assert len(published) >= 50, (day.name, len(published))
        assert all(r["value"] is not None and r["withheld_reason"] is None for r in published)
        assert all(r["value"] is None and r["withheld_reason"] for r in rows
                   if r["status"] == "withheld")


def _parquet_text(path) -> bytes:
    """Everything of a Parquet file an identifier (a string) could hide in: column names,
    the distinct values of every string column, and any nested column as JSON (numbers,
    dates and booleans cannot hold one). Three months of clean meter readings decoded row by
    row made the scan take minutes."""
    import pyarrow.compute as pc

    table = pq.read_table(path)
    parts = list(table.column_names)
    for col in table.columns:
        t = col.type
        if pa.types.is_dictionary(t):
            col, t = col.cast(t.value_type), t.value_type
        if pa.types.is_string(t) or pa.types.is_large_string(t):
            parts += [v for v in pc.unique(col).to_pylist() if v is not None]
        elif pa.types.is_nested(t) or pa.types.is_binary(t) or pa.types.is_large_binary(t):
            parts.append(json.dumps(col.to_pylist(), default=str))
    return "\n".join(parts).encode()


def _find_substrings(needles: list[str], haystack: bytes) -> list[str]:
    """The needles (each at least 7 characters) that occur in haystack, in one pass over it
    (an index of the needles' first 7 bytes) instead of one search per needle."""
    by_prefix: dict[bytes, list[bytes]] = {}
    for n in needles:
        b = n.encode()
        assert len(b) >= 7
        by_prefix.setdefault(b[:7], []).append(b)
    found = set()
    get = by_prefix.get
    for i in range(len(haystack) - 6):
        cands = get(haystack[i:i + 7])
        if cands:
            found.update(c for c in cands if haystack.startswith(c, i))
    return sorted(c.decode() for c in found)
