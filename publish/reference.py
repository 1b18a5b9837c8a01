"""The city's public reference tables as datasets: districts, regions and request types.

A product publishes codes (``district_id``, ``region_id``, ``origin``, ``request_type``, ...);
these datasets give every code its name, so a researcher can join them, and the CSV copies
carry the names as columns (publish/csvcopy.py). They are built from the reference files the
city publishes anyway (``<raw>/city/``): no person is in them, so they go to the catalog
without a privacy step.

* ``opencity-districts``: ``district_id``, ``district_name`` and the district's bounding box
  (``districts.csv``: ``district_id``, ``name``, ``lat_min`` ... ``lon_max``; the box is empty
  when the city's districts come from a profile's reference list, written by the 311 ingest
  to ``<run_dir>/reference/``, see publish/targets.py);
* ``opencity-regions``: the regions mobility is published for, ``region_id``,
  ``region_name``, the number of cell towers and their coarse extent (bounding box of the
  towers rounded outward to 0.01 degree, about 1 km; ``towers.csv``). A region's name comes
  from ``regions.csv`` (``region_id``, ``name``) when the city has one, else from the district
  of the same id, else it is the id;
* ``opencity-request-types``: ``request_type`` and ``request_type_name``
  (``request_types.csv``: ``request_type``, ``name``).

A missing reference file means that dataset is not built (nothing else is affected).
"""

from __future__ import annotations

import math
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from opencity.errors import ConfigError
from opencity.io import write_atomic
from publish.base import DatasetRelease, Field, Resource

DISTRICTS = "opencity-districts"
REGIONS = "opencity-regions"
REQUEST_TYPES = "opencity-request-types"
REFERENCE_DATASETS = (DISTRICTS, REGIONS, REQUEST_TYPES)
#: dataset -> its one table (the folder name under data/)
TABLES = {DISTRICTS: "districts", REGIONS: "regions", REQUEST_TYPES: "request_types"}
#: dataset -> (id column, name column) of its table
KEYS = {DISTRICTS: ("district_id", "district_name"), REGIONS: ("region_id", "region_name"),
        REQUEST_TYPES: ("request_type", "request_type_name")}
EXTENT_DECIMALS = 2  # tower extents rounded outward to 0.01 degree (about 1 km)

_BBOX = ("lat_min", "lat_max", "lon_min", "lon_max")
_FIELDS = {
    DISTRICTS: (
        Field("district_id", "string", "district code, as in every district_id column"),
        Field("district_name", "string", "public name of the district"),
        Field("lat_min", "number", "southern edge of the district", "degree"),
        Field("lat_max", "number", "northern edge of the district", "degree"),
        Field("lon_min", "number", "western edge of the district", "degree"),
        Field("lon_max", "number", "eastern edge of the district", "degree"),
    ),
    REGIONS: (
        Field("region_id", "string", "region code, as in the mobility tables' region_id, "
              "origin and destination columns"),
        Field("region_name", "string", "public name of the region"),
        Field("towers", "integer", "number of cell towers of the region"),
        Field("lat_min", "number", "southern edge of the region's towers, rounded outward "
              "to 0.01 degree", "degree"),
        Field("lat_max", "number", "northern edge of the region's towers, rounded outward "
              "to 0.01 degree", "degree"),
        Field("lon_min", "number", "western edge of the region's towers, rounded outward "
              "to 0.01 degree", "degree"),
        Field("lon_max", "number", "eastern edge of the region's towers, rounded outward "
              "to 0.01 degree", "degree"),
    ),
    REQUEST_TYPES: (
        Field("request_type", "string", "request type code, as in every request_type column"),
        Field("request_type_name", "string", "public name of the request type"),
    ),
}
_TITLES = {DISTRICTS: "Districts", REGIONS: "Mobility regions",
           REQUEST_TYPES: "311 request types"}
_DESCRIPTIONS = {
    DISTRICTS: "The city's districts: code, name and bounding box. Join on district_id (or "
               "a KPI's area) to name the districts of every other dataset.",
    REGIONS: "The regions the mobility statistics are published for: code, name, number of "
             "cell towers and the towers' coarse extent (rounded outward to 0.01 degree). "
             "Join on region_id, origin or destination.",
    REQUEST_TYPES: "The 311 request types: code and name. Join on request_type.",
}


def _read(path: Path, required: tuple[str, ...]) -> pa.Table | None:
    if not path.is_file():
        return None
    try:
        table = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(
            column_types={c: pa.string() for c in required if not c.startswith(("lat", "lon"))}))
    except (OSError, pa.ArrowInvalid) as err:
        raise ConfigError(f"reference file {path} cannot be read: {err}") from err
    missing = [c for c in required if c not in table.column_names]
    if missing:
        raise ConfigError(f"reference file {path} has no column(s) {', '.join(missing)}; "
                          f"it needs {', '.join(required)}")
    return table


def _outward(values: list[float], up: bool) -> float:
    scale = 10 ** EXTENT_DECIMALS
    f = math.ceil if up else math.floor
    return f(round(max(values) if up else min(values), 9) * scale) / scale


def reference_tables(reference_dir: str | Path) -> dict[str, pa.Table]:
    """Dataset name -> its table, from the city's reference files in ``reference_dir``."""
    ref = Path(reference_dir)
    out: dict[str, pa.Table] = {}
    # A city whose profile lists its districts (id, name) has no boxes: they are empty.
    districts = _read(ref / "districts.csv", ("district_id", "name"))
    district_names: dict[str, str] = {}
    if districts is not None:
        districts = districts.sort_by("district_id")
        district_names = dict(zip(districts["district_id"].to_pylist(),
                                  districts["name"].to_pylist(), strict=True))
        out[DISTRICTS] = pa.table({
            "district_id": districts["district_id"].cast(pa.string()),
            "district_name": districts["name"].cast(pa.string()),
            **{c: (pc.cast(districts[c], pa.float64()) if c in districts.column_names
                   else pa.nulls(districts.num_rows, pa.float64())) for c in _BBOX}})
    towers = _read(ref / "towers.csv", ("region_id", "lat", "lon"))
    if towers is not None:
        regions = _read(ref / "regions.csv", ("region_id", "name"))
        region_names = (dict(zip(regions["region_id"].to_pylist(), regions["name"].to_pylist(),
                                 strict=True)) if regions is not None else {})
        by_region: dict[str, tuple[list[float], list[float]]] = {}
        for rid, lat, lon in zip(towers["region_id"].to_pylist(), towers["lat"].to_pylist(),
                                 towers["lon"].to_pylist(), strict=True):
            if rid is None or lat is None or lon is None:
                continue
            lats, lons = by_region.setdefault(rid, ([], []))
            lats.append(float(lat))
            lons.append(float(lon))
        ids = sorted(by_region)
        out[REGIONS] = pa.table({
            "region_id": pa.array(ids, pa.string()),
            "region_name": pa.array([region_names.get(r) or district_names.get(r) or r
                                     for r in ids], pa.string()),
            "towers": pa.array([len(by_region[r][0]) for r in ids], pa.int64()),
            "lat_min": pa.array([_outward(by_region[r][0], False) for r in ids]),
            "lat_max": pa.array([_outward(by_region[r][0], True) for r in ids]),
            "lon_min": pa.array([_outward(by_region[r][1], False) for r in ids]),
            "lon_max": pa.array([_outward(by_region[r][1], True) for r in ids]),
        })
    types = _read(ref / "request_types.csv", ("request_type", "name"))
    if types is not None:
        types = types.sort_by("request_type")
        out[REQUEST_TYPES] = pa.table({
            "request_type": types["request_type"].cast(pa.string()),
            "request_type_name": types["name"].cast(pa.string())})
    return out


def reference_releases(reference_dir: str | Path, out_dir: str | Path, *,
                       city_name: str = "") -> list[DatasetRelease]:
    """The reference datasets as releases, their Parquet files written under ``out_dir``.

    They have no partition (one current table each); a changed reference file replaces the
    table on the next publish.
    """
    releases = []
    for name, table in reference_tables(reference_dir).items():
        path = Path(out_dir) / name / f"{TABLES[name]}.parquet"
        write_atomic(path, lambda tmp, table=table: pq.write_table(table, tmp))
        title = f"{_TITLES[name]} - {city_name}" if city_name else _TITLES[name]
        releases.append(DatasetRelease(
            name=name, title=title, description=_DESCRIPTIONS[name],
            resources=(Resource(path, TABLES[name], "parquet",
                                f"{_TITLES[name]} (Parquet)"),),
            fields=_FIELDS[name],
            privacy={"privacy_method": "none",
                     "note": "public reference data of the city; no personal data"},
            tags=("reference-data", "open-data"),
            spatial_coverage=city_name,
            accrual_periodicity="R/P1Y",
        ))
    return releases


def name_lookups(catalog_root: str | Path) -> dict[str, dict[str, str]]:
    """Reference dataset -> {code: name}, read from the reference datasets published in the
    local catalog at ``catalog_root`` (empty for a dataset that is not there)."""
    found: dict[str, dict[str, str]] = {}
    for name in REFERENCE_DATASETS:
        path = Path(catalog_root) / name / "data" / TABLES[name] / "part-0.parquet"
        if not path.is_file():
            continue
        key, label = KEYS[name]
        table = pq.read_table(path, columns=[key, label])
        found[name] = {k: v for k, v in zip(table[key].to_pylist(), table[label].to_pylist(),
                                            strict=True) if k is not None and v is not None}
    return found
