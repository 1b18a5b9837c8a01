"""Generalization hierarchies: ARX CSV format, builders and validation.

A :class:`Hierarchy` is a table with one row per original (leaf) value and one column per
generalization level: column 0 is the original value, the last column is the single top
value ``'*'``. This is exactly ARX's hierarchy CSV format (no header, ``;``-separated).

Hierarchies must be *consistent*: two leaves that share a value at level ``L`` share their
value at every level above ``L``. The lattice search relies on it to roll class counts up
from a finer node instead of re-reading the data.

Builders produce hierarchies from public reference data (age ranges, calendars, district
tables, category trees), never from the private data. Builders whose input is not a string
(numbers, timestamps, coordinates) carry a ``prepare`` step that maps the raw column(s) to
leaf labels (e.g. a timestamp to its hour, a lat/lon pair to a grid cell); the original
finer values are never released.
"""

from __future__ import annotations

import csv
import datetime as dt
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from opencity.errors import ConfigError, DataQualityError

TOP = "*"
NULL_LABEL = "NULL"  # ARX's label for a missing value; a hierarchy may contain it as a leaf

# prepare(table, column) -> pa.Array of leaf labels (strings), one per row
PrepareFn = Callable[[pa.Table, str], pa.Array]


@dataclass(frozen=True, eq=False)
class Hierarchy:
    """A validated generalization hierarchy for one quasi-identifier.

    Attributes:
        rows: one tuple per leaf: (leaf, level 1 value, ..., '*').
        name: label used in error messages (usually the file or builder name).
        prepare: optional vectorized step mapping the raw column(s) to leaf labels.
        source_columns: raw columns ``prepare`` reads (dropped from the release).
        ordered: True if leaf order is meaningful (numeric/time), for ordered t-closeness.
    """

    rows: tuple[tuple[str, ...], ...]
    name: str = "hierarchy"
    prepare: PrepareFn | None = field(default=None, repr=False)
    source_columns: tuple[str, ...] = ()
    ordered: bool = False

    def __post_init__(self) -> None:
        _validate_rows(self.rows, self.name)
        height = len(self.rows[0]) - 1
        leaves = np.array([r[0] for r in self.rows], dtype=object)
        codes: list[np.ndarray] = []
        labels: list[list[str]] = []
        for level in range(height + 1):
            col = [r[level] for r in self.rows]
            uniq: dict[str, int] = {}
            code = np.empty(len(col), dtype=np.int64)
            for i, v in enumerate(col):  # hierarchy rows, not data rows
                code[i] = uniq.setdefault(v, len(uniq))
            codes.append(code)
            labels.append(list(uniq))
        object.__setattr__(self, "_leaves", leaves)
        object.__setattr__(self, "_codes", codes)
        object.__setattr__(self, "_labels", labels)

    # ----------------------------------------------------------------- properties
    @property
    def height(self) -> int:
        """Highest generalization level (level 0 = original value)."""
        return len(self.rows[0]) - 1

    @property
    def leaves(self) -> list[str]:
        """Original values covered, in hierarchy order."""
        return list(self._leaves)

    def labels(self, level: int) -> list[str]:
        """Distinct values at ``level``; position = code used by :meth:`leaf_codes`."""
        return list(self._labels[level])

    def leaf_codes(self, level: int) -> np.ndarray:
        """int64 array: leaf index -> code of its value at ``level``."""
        return self._codes[level]

    def up_map(self, src: int, dst: int) -> np.ndarray:
        """int64 array mapping codes at level ``src`` to codes at level ``dst`` >= src."""
        out = np.empty(len(self._labels[src]), dtype=np.int64)
        out[self._codes[src]] = self._codes[dst]
        return out

    def generalize(self, value: str, level: int) -> str:
        """The value of leaf ``value`` at ``level`` (for docs and tests, not for data)."""
        idx = self.leaves.index(value)
        return self.rows[idx][level]

    # ----------------------------------------------------------------- data
    def leaf_labels(self, table: pa.Table, column: str) -> pa.Array:
        """The leaf label of every row of ``table`` for QI ``column`` (strings)."""
        if self.prepare is not None:
            arr = self.prepare(table, column)
        else:
            if column not in table.column_names:
                raise DataQualityError(
                    f"quasi-identifier column {column!r} is not in the input "
                    f"(columns: {', '.join(table.column_names)})"
                )
            arr = _as_strings(table.column(column), column)
        if isinstance(arr, pa.ChunkedArray):
            arr = arr.combine_chunks()
        return pc.fill_null(arr, NULL_LABEL)

    def encode(self, table: pa.Table, column: str) -> np.ndarray:
        """Leaf index of every row (int64). Raises naming column, value and row if uncovered."""
        labels = self.leaf_labels(table, column)
        idx = pc.index_in(labels, value_set=pa.array(self._leaves.tolist(), pa.string()))
        if idx.null_count:
            missing = pc.is_null(idx)
            row = int(pc.index(missing, True).as_py())
            bad = pc.unique(pc.filter(labels, missing))
            shown = ", ".join(repr(v) for v in bad.to_pylist()[:5])
            more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
            raise DataQualityError(
                f"column {column!r}: value {labels[row].as_py()!r} (row {row + 1}) is not in "
                f"its hierarchy {self.name!r}; uncovered values: {shown}{more}. "
                "Add them to the hierarchy (or clean the data) and run again."
            )
        return idx.to_numpy(zero_copy_only=False).astype(np.int64)

    def with_missing(self, label: str = NULL_LABEL) -> Hierarchy:
        """Copy with a leaf for missing values (``label`` on every level below '*')."""
        if label in self._leaves:
            return self
        row = (label,) * self.height + (TOP,)
        return Hierarchy(self.rows + (row,), name=self.name, prepare=self.prepare,
                         source_columns=self.source_columns, ordered=self.ordered)

    # ----------------------------------------------------------------- I/O
    @classmethod
    def from_csv(cls, path: str | Path, sep: str = ";", *, name: str | None = None,
                 ordered: bool = False) -> Hierarchy:
        """Read an ARX hierarchy CSV (no header, column 0 = original value, last = '*')."""
        path = Path(path)
        try:
            with path.open(newline="", encoding="utf-8") as fh:
                rows = [tuple(r) for r in csv.reader(fh, delimiter=sep) if r]
        except OSError as err:
            raise ConfigError(f"cannot read hierarchy file {path}: {err.strerror}") from err
        except UnicodeDecodeError as err:
            raise ConfigError(f"hierarchy file {path} is not UTF-8 text") from err
        return cls(tuple(rows), name=name or path.name, ordered=ordered)

    def to_csv(self, path: str | Path, sep: str = ";") -> None:
        """Write the hierarchy in ARX's CSV format (atomically, through opencity.io)."""
        from opencity.io import write_atomic

        def write(tmp: Path) -> None:
            with tmp.open("w", newline="", encoding="utf-8") as fh:
                csv.writer(fh, delimiter=sep, lineterminator="\n").writerows(self.rows)

        write_atomic(path, write)

    # ----------------------------------------------------------------- builders
    @classmethod
    def flat(cls, values: Sequence[str], *, name: str = "flat") -> Hierarchy:
        """Value -> '*' (e.g. gender, or district_id from the public district table)."""
        return cls(tuple((str(v), TOP) for v in values), name=name)

    @classmethod
    def intervals(cls, low: int, high: int, widths: Sequence[int] = (5, 10, 20), *,
                  name: str = "intervals") -> Hierarchy:
        """Integer intervals, e.g. age 0..120 -> [20, 25) -> [20, 30) -> [20, 40) -> '*'.

        Args:
            low, high: inclusive integer domain (public bounds, not data min/max).
            widths: interval widths per level; each must be a multiple of the previous
                so levels nest. Bins are aligned at multiples of the width.
        """
        if not (isinstance(low, int) and isinstance(high, int)) or high < low:
            raise ConfigError(f"intervals: need integers low <= high, got {low!r}, {high!r}")
        prev = 1
        for w in widths:
            if not isinstance(w, int) or w <= 0 or w % prev:
                raise ConfigError(
                    f"intervals: widths must be positive integers, each a multiple of the "
                    f"previous one (got {list(widths)})"
                )
            prev = w
        rows = []
        for v in range(low, high + 1):
            row = [str(v)]
            for w in widths:
                start = (v // w) * w
                row.append(f"[{start}, {start + w})")
            row.append(TOP)
            rows.append(tuple(row))

        def prepare(table: pa.Table, column: str) -> pa.Array:
            col = _column(table, column)
            if pa.types.is_floating(col.type):
                col = pc.floor(col)
            if pa.types.is_integer(col.type) or pa.types.is_floating(col.type):
                col = pc.cast(col, pa.int64())
            return pc.cast(col, pa.string())

        return cls(tuple(rows), name=name, prepare=prepare, ordered=True)

    @classmethod
    def timestamps(cls, start: dt.date | dt.datetime, end: dt.date | dt.datetime,
                   levels: Sequence[str] = ("hour", "day", "week", "month"), *,
                   name: str = "timestamps") -> Hierarchy:
        """Calendar hierarchy over [start, end): e.g. hour -> day -> week -> month -> '*'.

        Level 0 is the first entry of ``levels``: raw timestamps are truncated to it by the
        ``prepare`` step (UTC), so finer detail is never released. Labels: hour
        ``2024-03-05T13``, day ``2024-03-05``, week ``W2024-03-04`` (ISO week labelled by its
        Monday), month ``2024-03``, year ``2024``. A week maps to the month (and year) in
        which it starts, so the levels nest.
        """
        order = ["hour", "day", "week", "month", "year"]
        levels = list(levels)
        if not levels or any(lv not in order for lv in levels) or levels != sorted(
            levels, key=order.index
        ) or len(set(levels)) != len(levels):
            raise ConfigError(
                f"timestamps: levels must be an increasing subset of {order}, got {levels}"
            )
        t0 = _as_datetime(start)
        t1 = _as_datetime(end)
        if t1 <= t0:
            raise ConfigError("timestamps: end must be after start")
        step = dt.timedelta(hours=1) if levels[0] == "hour" else dt.timedelta(days=1)
        t = _truncate(t0, levels[0])
        rows = []
        seen = set()
        while t < t1:
            label0 = _label(t, levels[0])
            if label0 not in seen:
                seen.add(label0)
                anchor = t
                row = [label0]
                for lv in levels[1:]:
                    if lv == "week":
                        anchor = _truncate(anchor, "week")
                    row.append(_label(anchor, lv))
                row.append(TOP)
                rows.append(tuple(row))
            t += step
        base = levels[0]

        def prepare(table: pa.Table, column: str) -> pa.Array:
            col = _column(table, column)
            if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
                try:
                    col = pc.cast(col, pa.timestamp("us", tz="UTC"))
                except pa.ArrowInvalid as err:
                    raise DataQualityError(
                        f"column {column!r}: cannot parse timestamps ({err})"
                    ) from err
            if pa.types.is_timestamp(col.type) and col.type.tz is not None:
                col = pc.cast(col, pa.timestamp(col.type.unit, "UTC"))
            if base == "week":
                col = pc.floor_temporal(col, unit="week", week_starts_monday=True)
            fmt = {"hour": "%Y-%m-%dT%H", "day": "%Y-%m-%d", "week": "W%Y-%m-%d",
                   "month": "%Y-%m", "year": "%Y"}[base]
            return pc.strftime(col, format=fmt)

        return cls(tuple(rows), name=name, prepare=prepare, ordered=True)

    @classmethod
    def masking(cls, values: Sequence[str], *, name: str = "masking") -> Hierarchy:
        """Right-to-left masking of fixed-length codes (zip codes): 12345 -> 1234* -> ... -> '*'.

        Args:
            values: the public list of codes (e.g. all postal codes of the city), equal length.
        """
        vals = sorted({str(v) for v in values})
        if not vals:
            raise ConfigError("masking: no values given")
        n = len(vals[0])
        if any(len(v) != n for v in vals):
            raise ConfigError("masking: all codes must have the same length")
        rows = []
        for v in vals:
            row = [v] + [v[: n - i] + "*" * i for i in range(1, n + 1)]
            if row[-1] != TOP:
                row.append(TOP)
            rows.append(tuple(row))
        return cls(tuple(rows), name=name)

    @classmethod
    def from_tree(cls, tree: Mapping | Sequence, *, name: str = "tree") -> Hierarchy:
        """Categorical tree: nested mappings whose leaves are lists of values.

        ``{"infrastructure": {"roads": ["pothole"]}, "noise": ["noise"]}`` gives
        pothole -> roads -> infrastructure -> '*'. Shallower leaves repeat their own value
        on the missing lower levels, so every row has the same height.
        """
        paths: list[list[str]] = []

        def walk(node: object, trail: list[str]) -> None:
            if isinstance(node, Mapping):
                for key, child in node.items():
                    walk(child, [str(key), *trail])
            elif isinstance(node, (list, tuple)):
                for leaf in node:
                    if isinstance(leaf, (Mapping, list, tuple)):
                        walk(leaf, trail)
                    else:
                        paths.append([str(leaf), *trail])
            elif node is None:
                paths.append(trail)
            else:
                paths.append([str(node), *trail])

        walk(tree, [])
        paths = [p for p in paths if p]
        if not paths:
            raise ConfigError(f"category tree {name!r} has no leaves")
        depth = max(len(p) for p in paths)
        rows = []
        for p in paths:
            pad = [p[0]] * (depth - len(p))
            rows.append((p[0], *pad, *p[1:], TOP))
        return cls(tuple(rows), name=name)

    @classmethod
    def from_yaml(cls, path: str | Path, *, key: str | None = None) -> Hierarchy:
        """Categorical tree from a YAML file (see :meth:`from_tree`); ``key`` selects a subtree."""
        import yaml

        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as err:
            raise ConfigError(f"cannot read category tree {path}: {err}") from err
        if key is not None:
            if not isinstance(data, Mapping) or key not in data:
                raise ConfigError(f"category tree {path}: no top-level key {key!r}")
            data = data[key]
        return cls.from_tree(data, name=path.name)

    @classmethod
    def geo_grid(cls, districts: pa.Table | Mapping[str, Sequence], *, cell_deg: float = 0.01,
                 lat_column: str = "lat", lon_column: str = "lon",
                 city: str | None = None, name: str = "geo") -> Hierarchy:
        """lat/lon -> grid cell -> district -> (city) -> '*' from the public district table.

        Args:
            districts: columns district_id, lat_min, lat_max, lon_min, lon_max (rectangles
                tiling the city, as in ``city/districts.csv``).
            cell_deg: grid cell size in degrees; a cell belongs to the district holding its
                centre. Cells are labelled ``cell_<row>_<col>`` from the city's south-west.
            lat_column, lon_column: raw coordinate columns read by ``prepare``.
            city: optional city label added as a level below '*'.
        """
        tab = districts if isinstance(districts, pa.Table) else pa.table(dict(districts))
        need = ["district_id", "lat_min", "lat_max", "lon_min", "lon_max"]
        miss = [c for c in need if c not in tab.column_names]
        if miss:
            raise ConfigError(f"geo_grid: district table lacks columns {miss}")
        if not (isinstance(cell_deg, (int, float)) and math.isfinite(cell_deg) and cell_deg > 0):
            raise ConfigError(f"geo_grid: cell_deg must be a positive number, got {cell_deg!r}")
        d = {c: tab.column(c).to_pylist() for c in need}
        lat0, lon0 = min(d["lat_min"]), min(d["lon_min"])
        nrow = math.ceil((max(d["lat_max"]) - lat0) / cell_deg - 1e-9)
        ncol = math.ceil((max(d["lon_max"]) - lon0) / cell_deg - 1e-9)
        rows = []
        for r in range(nrow):
            for c in range(ncol):
                clat = lat0 + (r + 0.5) * cell_deg
                clon = lon0 + (c + 0.5) * cell_deg
                for i, did in enumerate(d["district_id"]):
                    if (d["lat_min"][i] <= clat < d["lat_max"][i]
                            and d["lon_min"][i] <= clon < d["lon_max"][i]):
                        row = [f"cell_{r}_{c}", str(did)]
                        if city:
                            row.append(city)
                        row.append(TOP)
                        rows.append(tuple(row))
                        break

        def prepare(table: pa.Table, column: str) -> pa.Array:
            lat = pc.cast(_column(table, lat_column), pa.float64())
            lon = pc.cast(_column(table, lon_column), pa.float64())
            r = pc.cast(pc.floor(pc.divide(pc.subtract(lat, lat0), cell_deg)), pa.int64())
            c = pc.cast(pc.floor(pc.divide(pc.subtract(lon, lon0), cell_deg)), pa.int64())
            return pc.binary_join_element_wise(
                "cell", pc.cast(r, pa.string()), pc.cast(c, pa.string()), "_"
            )

        return cls(tuple(rows), name=name, prepare=prepare,
                   source_columns=(lat_column, lon_column))


# --------------------------------------------------------------------- helpers
def _validate_rows(rows: tuple[tuple[str, ...], ...], name: str) -> None:
    if not rows:
        raise ConfigError(f"hierarchy {name!r} is empty")
    width = len(rows[0])
    if width < 2:
        raise ConfigError(
            f"hierarchy {name!r}: each row needs the original value and at least one level "
            f"(the last being '*'); row 1 has {width} column(s)"
        )
    seen: dict[str, int] = {}
    for i, row in enumerate(rows, start=1):
        if len(row) != width:
            raise ConfigError(
                f"hierarchy {name!r}: row {i} (value {row[0]!r}) has {len(row)} levels, "
                f"row 1 has {width}; every row needs the same number of levels"
            )
        if any(not isinstance(v, str) for v in row):
            raise ConfigError(f"hierarchy {name!r}: row {i} contains a non-string value")
        if row[0] in seen:
            raise ConfigError(
                f"hierarchy {name!r}: value {row[0]!r} appears twice (rows {seen[row[0]]} and {i})"
            )
        seen[row[0]] = i
    tops = {r[-1] for r in rows}
    if len(tops) != 1:
        raise ConfigError(
            f"hierarchy {name!r}: the last level must hold one top value, found "
            f"{sorted(tops)[:5]}"
        )
    for level in range(1, width):
        parent: dict[str, tuple[str, int]] = {}
        for i, row in enumerate(rows, start=1):
            below, here = row[level - 1], row[level]
            if below in parent and parent[below][0] != here:
                raise ConfigError(
                    f"hierarchy {name!r}: inconsistent levels: {below!r} at level {level - 1} "
                    f"maps to {parent[below][0]!r} (row {parent[below][1]}) and to {here!r} "
                    f"(row {i}, value {row[0]!r}) at level {level}"
                )
            parent.setdefault(below, (here, i))


def _column(table: pa.Table, column: str) -> pa.Array:
    if column not in table.column_names:
        raise DataQualityError(
            f"column {column!r} is not in the input (columns: {', '.join(table.column_names)})"
        )
    col = table.column(column)
    return col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col


def _as_strings(col: pa.ChunkedArray | pa.Array, column: str) -> pa.Array:
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    if pa.types.is_dictionary(col.type):
        col = col.dictionary_decode()
    if pa.types.is_floating(col.type):
        # 39.0 -> "39" so integer-valued floats match integer leaves (ARX reads text).
        finite = pc.fill_null(pc.equal(col, pc.floor(col)), True)
        if pc.all(finite).as_py():
            col = pc.cast(col, pa.int64())
    if pa.types.is_large_string(col.type):
        return pc.cast(col, pa.string())
    if not pa.types.is_string(col.type):
        try:
            return pc.cast(col, pa.string())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
            raise DataQualityError(
                f"column {column!r}: cannot compare its values ({col.type}) with hierarchy "
                "labels; convert it to text first"
            ) from err
    return col


def _as_datetime(v: dt.date | dt.datetime) -> dt.datetime:
    if isinstance(v, dt.datetime):
        return v.astimezone(dt.UTC).replace(tzinfo=None) if v.tzinfo else v
    if isinstance(v, dt.date):
        return dt.datetime(v.year, v.month, v.day)
    raise ConfigError(f"timestamps: expected a date or datetime, got {v!r}")


def _truncate(t: dt.datetime, level: str) -> dt.datetime:
    if level == "hour":
        return t.replace(minute=0, second=0, microsecond=0)
    day = t.replace(hour=0, minute=0, second=0, microsecond=0)
    if level == "day":
        return day
    if level == "week":
        return day - dt.timedelta(days=day.weekday())
    if level == "month":
        return day.replace(day=1)
    return day.replace(month=1, day=1)


def _label(t: dt.datetime, level: str) -> str:
    if level == "hour":
        return t.strftime("%Y-%m-%dT%H")
    if level == "day":
        return t.strftime("%Y-%m-%d")
    if level == "week":
        return "W" + _truncate(t, "week").strftime("%Y-%m-%d")
    if level == "month":
        return t.strftime("%Y-%m")
    return t.strftime("%Y")
