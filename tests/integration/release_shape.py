"""What a run publishes, as a comparable summary: datasets, partitions, resources, table
columns, key sets and privacy statements (issue 19: the refactor of the release protocol must
publish the same as before; tests/data/demo_release_shape.json is the summary of the demo
before it).

Noise-dependent values (counts, error bounds, hashes, times, run ids) are left out; what stays
is what the protocol decides: which datasets and partitions exist, their tables and columns,
the public key sets, the privacy parameters and the keys of every privacy statement.

    python tests/integration/release_shape.py RUN_DIR > tests/data/demo_release_shape.json
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

# Columns whose values come from noise or from the data rather than from the public key set.
NOT_KEYS = {"status", "withheld_reason", "method", "mechanism", "computed_at", "unit",
            "source_datasets", "kpi_name"}
# Privacy parameters compared by value (everything else in the package's privacy block is
# compared by key only: it holds hashes, times and noisy effects).
PARAMS = {"privacy_method", "privacy_unit", "privacy_unit_level", "epsilon", "delta",
          "epsilon_per_release", "contribution_bounds", "granularity", "k_anonymity_k",
          "l_diversity_l", "quasi_identifiers", "sensitive_attribute", "dp_mechanisms",
          "epsilon_per_unit_per_month", "suppression_min_units", "max_records_per_person"}


def _key_paths(obj: Any, prefix: str = "", depth: int = 2) -> list[str]:
    if not isinstance(obj, dict) or depth == 0:
        return []
    out = []
    for k, v in obj.items():
        path = f"{prefix}{k}"
        out.append(path)
        out += _key_paths(v, path + ".", depth - 1)
    return out


def _key_set(table: pa.Table) -> dict[str, Any]:
    keys = [f.name for f in table.schema
            if f.name not in NOT_KEYS and not f.name.endswith("_name")
            and (pa.types.is_string(f.type) or pa.types.is_large_string(f.type)
                 or pa.types.is_date(f.type) or pa.types.is_dictionary(f.type))]
    rows = sorted({tuple(str(v) for v in r.values())
                   for r in table.select(keys).to_pylist()}) if keys else []
    return {"columns": keys, "distinct": len(rows),
            "sha256": hashlib.sha256(json.dumps(rows).encode()).hexdigest()}


def release_shape(run_dir: Path) -> dict[str, Any]:
    catalog = Path(run_dir) / "catalog"
    out: dict[str, Any] = {}
    for pkg_path in sorted(catalog.glob("*/package.json")):
        pkg = json.loads(pkg_path.read_text())
        ds = pkg_path.parent
        meta = pkg.get("opencity", {})
        privacy = meta.get("privacy", {})
        tables: dict[str, Any] = {}
        for part in sorted((ds / "data").rglob("*.parquet")):
            table = pq.read_table(part)
            name = str(part.parent.relative_to(ds / "data"))
            tables[name] = {"columns": [f"{f.name}:{f.type}" for f in table.schema],
                            "keys": _key_set(table)}
        statements: dict[str, Any] = {}
        # Published statements (files/) and those kept beside the outputs (outputs/).
        for stmt in sorted([*(ds / "files").glob("dt=*/privacy.json"),
                            *(Path(run_dir) / "outputs" / ds.name).glob("dt=*/privacy.json")]):
            body = json.loads(stmt.read_text())
            where = "published" if stmt.is_relative_to(catalog) else "outputs"
            statements[f"{where}/{stmt.parent.name}"] = {
                "keys": sorted(_key_paths(body)),
                "params": {k: body[k] for k in sorted(PARAMS & body.keys())}}
        out[pkg["name"]] = {
            "title": pkg.get("title"),
            "tags": sorted(t["name"] if isinstance(t, dict) else t
                           for t in pkg.get("tags", [])),
            "accrual_periodicity": meta.get("accrual_periodicity"),
            "partitions": sorted(p["partition"] for p in meta.get("partitions", [])),
            "resources": sorted(f"{r.get('partition')}/{r['name']}:{r.get('format')}"
                                for r in pkg.get("resources", [])),
            "fields": [f"{f['name']}:{f['type']}" for f in meta.get("fields", [])],
            "primary_key": meta.get("primary_key"),
            "privacy_keys": sorted(privacy),
            "privacy_params": {k: privacy[k] for k in sorted(PARAMS & privacy.keys())},
            "tables": tables,
            "statements": statements,
        }
    return out


if __name__ == "__main__":
    json.dump(release_shape(Path(sys.argv[1])), sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")
