"""Thin I/O of the KPI product: read inputs, the catalog and earlier KPI partitions.

Paths follow opencity.settings.RunLayout. The KPI pipeline ingests the raw sources it needs
for the month itself (see opencity.pipelines.kpi) into ``clean/kpi_inputs/<source>/dt=...``,
so it does not depend on the partitioning of the other DAGs' clean data.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from kpi.compute import KPI_SCHEMA
from opencity.errors import DataQualityError

KPI_FILE = "kpis.parquet"


def read_optional_parquet(path: str | Path | None) -> pa.Table | None:
    """The table at ``path`` or None when there is no such file."""
    if not path or not Path(path).is_file():
        return None
    try:
        return pq.read_table(path)
    except (OSError, pa.ArrowInvalid) as err:
        raise DataQualityError(f"{path}: cannot read Parquet ({err})") from err


def read_catalog_partitions(catalog_dir: str | Path) -> pa.Table:
    """Published partitions of every dataset of a local catalog.

    Returns:
        Arrow table dataset, partition, accrual_periodicity (one row per resource partition).
    """
    rows: dict[str, list] = {"dataset": [], "partition": [], "accrual_periodicity": []}
    root = Path(catalog_dir)
    for pkg_file in sorted(root.glob("*/package.json")):
        try:
            pkg = json.loads(pkg_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise DataQualityError(f"{pkg_file}: unreadable catalog entry ({err})") from err
        extras = {e.get("key"): e.get("value") for e in pkg.get("extras", [])}
        acc = extras.get("accrual_periodicity", "")
        for res in pkg.get("resources", []):
            if res.get("partition"):
                rows["dataset"].append(pkg.get("name", pkg_file.parent.name))
                rows["partition"].append(res["partition"])
                rows["accrual_periodicity"].append(acc)
    return pa.table(rows, schema=pa.schema([(k, pa.string()) for k in rows]))


def read_kpi_history(dataset_dir: str | Path, before_partition: str | None = None) -> pa.Table:
    """Every earlier KPI partition under outputs/<dataset>/ (for trends), oldest first.

    Args:
        dataset_dir: outputs/<kpi dataset>.
        before_partition: only partitions sorting before this one ('dt=YYYY-MM-DD').
    """
    tables = []
    for part in sorted(Path(dataset_dir).glob("dt=*")):
        if before_partition and part.name >= before_partition:
            continue
        f = part / KPI_FILE
        if f.is_file():
            t = pq.read_table(f)
            for name in KPI_SCHEMA.names:  # partitions written before a column existed
                if name not in t.column_names:
                    t = t.append_column(name, pa.nulls(t.num_rows,
                                                       KPI_SCHEMA.field(name).type))
            tables.append(t.select(KPI_SCHEMA.names).cast(KPI_SCHEMA))
    if not tables:
        return KPI_SCHEMA.empty_table()
    return pa.concat_tables(tables)
