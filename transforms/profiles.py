"""Input profiles: how one publisher's files map onto OpenCity's canonical schemas.

A profile is a declarative YAML file (``<name>.yaml``, no Python): the shipped ones live in
``transforms/profiles/``, a city's in ``examples/<city>/profiles/``. ``get_profile(source,
name)`` resolves a shipped name (``baltimore-311``) or a path to a file. The ``opencity``
profile is the identity over the canonical columns (the synthetic city's own files).

Keys of a profile file (paths are relative to the profile file)::

    source: service_requests          # canonical source (transforms.schemas)
    description: ...
    columns:                          # canonical column -> raw column, or an SQL expression
      request_id: ServiceRequestNum
      district_id: {sql: "'council-' || \"CouncilDistrict\""}
    required_raw: [ServiceRequestNum, CreatedDate]   # default: the raw columns of required
                                                     # canonical columns
    timestamp:                        # how naive timestamps are written, and where
      format: "%m/%d/%Y %I:%M:%S %p"  # one strptime format or a list (tried in order)
      timezone: America/New_York      # IANA zone; converted to UTC
    bbox: {lat_min: 39.19, lat_max: 39.38, lon_min: -76.72, lon_max: -76.52}
    value_maps:                       # raw value (case-insensitive) -> public value; a raw
      status: {Closed: closed, ...}   # value not in the map is quarantined with the column
    units: {requester: requester_pid} # privacy unit -> canonical column (person-level units)
    personal: {requester_address: pseudonymize, description: drop}
    district: {column: district_id}   # or {polygons: x.geojson, id_property: .., name_property: ..}
    categories: ../reference/categories.csv   # id,name: the public request types
    districts: ../reference/districts.csv     # id,name: the public districts
    domains: {agency: [DPW, ...]}     # other code lists (a value outside is quarantined)

Categories and districts come from the reference files, never from the data: a value outside
them is quarantined with a reason. Every problem of a profile file is a ConfigError naming
the file and the key.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opencity.errors import ConfigError
from transforms.schemas import SCHEMAS, Schema

SHIPPED_DIR = Path(__file__).with_name("profiles")
PSEUDONYMIZE, DROP = "pseudonymize", "drop"
_KEYS = {"name", "source", "description", "columns", "required_raw", "timestamp", "bbox",
         "value_maps", "units", "personal", "district", "categories", "districts", "domains",
         "patterns"}


@dataclass(frozen=True)
class BBox:
    lat_min: float
    lat_max: float
    lon_min: float
    lon_max: float


@dataclass(frozen=True)
class DistrictPolygons:
    """Districts as boundary polygons: a row's district is the polygon holding its point."""

    file: str
    ids: tuple[str, ...]
    names: tuple[str, ...]
    wkb: tuple[bytes, ...]  # one (multi)polygon per id, WKB (shapely)


@dataclass(frozen=True)
class Profile:
    """How to read one publisher's files for one canonical source.

    Attributes:
        columns: canonical column -> SQL expression over raw columns (quoted identifiers).
            Canonical columns absent here are NULL (allowed only for optional columns).
        required_raw: raw columns that must exist in the file (checked before reading rows).
        timestamp_format: strptime format(s) of naive timestamp strings; None = ISO 8601.
        timezone: the zone naive timestamps were recorded in; converted to UTC.
        bbox: coordinates outside this box are quarantined (placeholder coordinates).
        value_maps: canonical column -> {raw value (lower-cased) -> canonical value}.
        domains: canonical column -> the publisher's code list, replacing the schema's
            domain of that column (e.g. a city's own request types). A value outside the
            domain is quarantined, never published.
        patterns: canonical column -> full-match regex replacing the schema's code shape.
        strict_value_maps: a raw value missing from a value map is quarantined (declarative
            profiles); otherwise it passes through lower-cased (then checked by its domain).
        units: privacy unit -> canonical column identifying it (person-level units).
        personal: canonical column -> 'pseudonymize' or 'drop'.
        categories / districts: the public reference lists, ((id, name), ...).
        district_polygons: boundary polygons giving district_id from lat/lon.
        file: the profile file ('' for the built-in identity profile).
        domain_labels: canonical column -> where its code list comes from (reasons).
    """

    name: str
    source: str
    columns: dict[str, str]
    required_raw: tuple[str, ...]
    timestamp_format: str | tuple[str, ...] | None = None
    timezone: str = "UTC"
    bbox: BBox | None = None
    value_maps: dict[str, dict[str, str]] = field(default_factory=dict)
    description: str = ""
    domains: dict[str, tuple[str, ...]] = field(default_factory=dict)
    patterns: dict[str, str] = field(default_factory=dict)
    strict_value_maps: bool = False
    units: dict[str, str] = field(default_factory=dict)
    personal: dict[str, str] = field(default_factory=dict)
    categories: tuple[tuple[str, str], ...] = ()
    districts: tuple[tuple[str, str], ...] = ()
    district_polygons: DistrictPolygons | None = None
    file: str = ""
    domain_labels: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        names = set(self.schema.names)
        for attr in ("columns", "value_maps", "domains", "patterns", "personal"):
            unknown = sorted(set(getattr(self, attr)) - names)
            if unknown:
                raise ConfigError(f"profile {self.where}: {attr} names unknown column(s) "
                                  f"{', '.join(unknown)} of {self.source!r}")

    @property
    def where(self) -> str:
        return self.file or repr(self.name)

    @property
    def timestamp_formats(self) -> tuple[str, ...]:
        f = self.timestamp_format
        if f is None:
            return ()
        return (f,) if isinstance(f, str) else tuple(f)

    def domain(self, column: str) -> tuple[str, ...] | None:
        """The allowed values of ``column`` (the profile's code list, else the schema's)."""
        if column in self.domains:
            return self.domains[column]
        return self.schema.column(column).allowed

    def pattern(self, column: str) -> str | None:
        """The full-match shape of ``column`` (the profile's, else the schema's)."""
        if column in self.patterns:
            return self.patterns[column]
        return self.schema.column(column).pattern

    def raw_columns(self, column: str) -> tuple[str, ...]:
        """The raw columns the expression of canonical ``column`` reads."""
        expr = self.columns.get(column)
        if expr is None:
            return ()
        return tuple(m.replace('""', '"') for m in re.findall(r'"((?:[^"]|"")+)"', expr))

    @property
    def schema(self) -> Schema:
        return SCHEMAS[self.source]

    @property
    def category_ids(self) -> tuple[str, ...]:
        return tuple(i for i, _ in self.categories)

    @property
    def district_ids(self) -> tuple[str, ...]:
        return tuple(i for i, _ in self.districts)


def canonical_profile(source: str) -> Profile:
    """Identity profile: the file has the canonical columns (OpenCity's own sample data)."""
    try:
        schema = SCHEMAS[source]
    except KeyError:
        raise ConfigError(
            f"unknown source {source!r}; known sources: {', '.join(sorted(SCHEMAS))}"
        ) from None
    return Profile(
        name="opencity",
        source=source,
        columns={c.name: f'"{c.name}"' for c in schema.columns},
        required_raw=tuple(c.name for c in schema.columns if c.required),
        description=f"OpenCity canonical {source} columns",
    )


# --- loading a profile file ------------------------------------------------------------------
def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _ref_csv(file: Path, key: str, rel: Any) -> tuple[tuple[str, str], ...]:
    """A reference list ``id,name`` (header required), ids unique and non-empty."""
    if not isinstance(rel, str) or not rel:
        raise ConfigError(f"{file}: {key} must be the path of a CSV file (id,name), relative "
                          "to the profile file")
    path = (file.parent / rel).resolve()
    try:
        with path.open(encoding="utf-8", newline="") as fh:
            rows = list(csv.DictReader(fh))
    except OSError as err:
        raise ConfigError(f"{file}: {key}: cannot read {path} ({err.strerror or err})") from None
    if not rows or not {"id", "name"} <= set(rows[0]):
        raise ConfigError(f"{file}: {key}: {path} must have the columns id,name and at least "
                          "one row")
    out: list[tuple[str, str]] = []
    seen: set[str] = set()
    for n, row in enumerate(rows, start=2):
        i, name = (row.get("id") or "").strip(), (row.get("name") or "").strip()
        if not i or not name:
            raise ConfigError(f"{file}: {key}: {path} line {n}: empty id or name")
        if i in seen:
            raise ConfigError(f"{file}: {key}: {path} line {n}: duplicate id {i!r}")
        seen.add(i)
        out.append((i, name))
    return tuple(out)


def _polygons(file: Path, spec: dict) -> DistrictPolygons:
    """Load district polygons; overlapping polygons are a ConfigError naming both ids."""
    import json

    try:
        import shapely
        from shapely.geometry import shape
    except ImportError as err:  # pragma: no cover - a dependency of the project
        raise ConfigError(f"{file}: district.polygons needs shapely (pip install "
                          "'shapely>=2.0')") from err
    unknown = set(spec) - {"polygons", "id_property", "name_property"}
    if unknown or not isinstance(spec.get("polygons"), str):
        raise ConfigError(f"{file}: district: {{polygons: <geojson file>, id_property: .., "
                          f"name_property: ..}} (unknown key(s) {sorted(unknown)})")
    path = (file.parent / spec["polygons"]).resolve()
    id_prop = spec.get("id_property", "id")
    name_prop = spec.get("name_property", "name")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ConfigError(f"{file}: district.polygons: cannot read {path} as GeoJSON "
                          f"({type(err).__name__})") from None
    feats = doc.get("features") if isinstance(doc, dict) else None
    if not isinstance(feats, list) or not feats:
        raise ConfigError(f"{file}: district.polygons: {path} is not a GeoJSON "
                          "FeatureCollection with features")
    ids, names, geoms = [], [], []
    for n, feat in enumerate(feats):
        props = (feat or {}).get("properties") or {}
        if id_prop not in props:
            raise ConfigError(f"{file}: district.id_property {id_prop!r} is missing in feature "
                              f"{n} of {path}")
        try:
            geom = shape(feat["geometry"])
        except Exception as err:  # noqa: BLE001 - shapely raises several types
            raise ConfigError(f"{file}: district.polygons: feature {n} of {path} has no valid "
                              f"geometry ({type(err).__name__})") from None
        if geom.geom_type not in ("Polygon", "MultiPolygon") or not geom.is_valid:
            raise ConfigError(f"{file}: district.polygons: feature {n} ({props[id_prop]}) of "
                              f"{path} is not a valid (multi)polygon")
        ids.append(str(props[id_prop]))
        names.append(str(props.get(name_prop, props[id_prop])))
        geoms.append(geom)
    if len(set(ids)) != len(ids):
        raise ConfigError(f"{file}: district.id_property {id_prop!r}: ids in {path} are not "
                          "unique")
    tree = shapely.STRtree(geoms)
    for i, g in enumerate(geoms):
        for j in tree.query(g):
            if j <= i:
                continue
            inter = g.intersection(geoms[j]).area
            if inter > 1e-9 * min(g.area, geoms[j].area) and inter > 0:
                raise ConfigError(
                    f"{file}: district.polygons: polygons {ids[i]!r} and {ids[int(j)]!r} of "
                    f"{path} overlap; district polygons must not overlap (a point would belong "
                    "to two districts): fix the boundary file")
    return DistrictPolygons(str(path), tuple(ids), tuple(names),
                            tuple(shapely.to_wkb(g) for g in geoms))


def _check_timezone(file: Path, zone: Any) -> str:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    if not isinstance(zone, str) or not zone:
        raise ConfigError(f"{file}: timestamp.timezone must be an IANA zone name such as "
                          "America/New_York")
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"{file}: timestamp.timezone: unknown time zone {zone!r}; use an "
                          "IANA name such as America/New_York or Europe/Rome") from None
    return zone


def _check_formats(file: Path, fmt: Any) -> tuple[str, ...]:
    import duckdb

    fmts = [fmt] if isinstance(fmt, str) else fmt
    if not isinstance(fmts, list) or not fmts or not all(isinstance(f, str) for f in fmts):
        raise ConfigError(f"{file}: timestamp.format must be a strptime format or a list of "
                          "them, e.g. '%Y-%m-%d %H:%M:%S'")
    con = duckdb.connect()
    try:
        for f in fmts:
            if "%" not in f:
                raise ConfigError(f"{file}: timestamp.format {f!r} has no % directive (a "
                                  "strptime format such as '%m/%d/%Y %I:%M:%S %p')")
            try:
                con.execute("SELECT try_strptime('2000-01-01', ?)", [f]).fetchall()
            except duckdb.Error:
                raise ConfigError(f"{file}: timestamp.format {f!r} is not a valid strptime "
                                  "format") from None
    finally:
        con.close()
    return tuple(fmts)


def load_profile(path: str | Path) -> Profile:
    """Parse and validate one profile file; ConfigError naming the file and key."""
    import yaml

    file = Path(path).resolve()
    try:
        doc = yaml.safe_load(file.read_text(encoding="utf-8"))
    except OSError as err:
        raise ConfigError(f"cannot read the profile {file}: {err.strerror or err}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{file}: not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{file}: a profile is a YAML mapping (source:, columns:, ...)")
    unknown = sorted(set(doc) - _KEYS)
    if unknown:
        raise ConfigError(f"{file}: unknown key(s) {unknown}; keys are {sorted(_KEYS)}")
    source = doc.get("source")
    if source not in SCHEMAS:
        raise ConfigError(f"{file}: source must be one of {', '.join(sorted(SCHEMAS))}, got "
                          f"{source!r}")
    schema = SCHEMAS[source]
    names = set(schema.names)

    def mapping(key: str) -> dict:
        value = doc.get(key) or {}
        if not isinstance(value, dict):
            raise ConfigError(f"{file}: {key} must be a mapping")
        bad = sorted(str(k) for k in value if k not in names) if key in (
            "columns", "value_maps", "domains", "patterns", "personal") else []
        if bad:
            raise ConfigError(f"{file}: {key}: unknown canonical column(s) {', '.join(bad)} of "
                              f"{source!r}; columns are {', '.join(schema.names)}")
        return value

    columns: dict[str, str] = {}
    for col, spec in mapping("columns").items():
        if isinstance(spec, str) and spec:
            columns[col] = _q(spec)
        elif isinstance(spec, dict) and set(spec) == {"sql"} and isinstance(spec["sql"], str):
            columns[col] = spec["sql"]
        else:
            raise ConfigError(f"{file}: columns.{col} must be a raw column name or "
                              "{sql: <DuckDB expression over quoted raw columns>}")
    missing = [c.name for c in schema.columns if c.required and c.name not in columns]
    if missing:
        raise ConfigError(f"{file}: columns: the required column(s) {', '.join(missing)} of "
                          f"{source!r} are not mapped")
    personal: dict[str, str] = {}
    for col, action in mapping("personal").items():
        if action not in (PSEUDONYMIZE, DROP):
            raise ConfigError(f"{file}: personal.{col} must be '{PSEUDONYMIZE}' or '{DROP}'")
        if action == PSEUDONYMIZE and not schema.column(col).identifier:
            raise ConfigError(f"{file}: personal.{col}: only identifier columns "
                              f"({', '.join(schema.identifiers) or 'none'}) are pseudonymized; "
                              "use 'drop'")
        personal[col] = action
    for col in [c for c, a in personal.items() if a == DROP]:
        if schema.column(col).required:
            raise ConfigError(f"{file}: personal.{col}: a required column cannot be dropped")
        columns.pop(col, None)
    unlisted = [c for c in columns if schema.column(c).identifier and c not in personal]
    if unlisted:
        raise ConfigError(f"{file}: personal: the identifier column(s) {', '.join(unlisted)} "
                          "are mapped; say 'pseudonymize' or 'drop' for each")

    ts = doc.get("timestamp") or {}
    if not isinstance(ts, dict) or set(ts) - {"format", "timezone"}:
        raise ConfigError(f"{file}: timestamp: {{format: <strptime>, timezone: <IANA zone>}}")
    fmts = _check_formats(file, ts["format"]) if "format" in ts else None
    zone = _check_timezone(file, ts.get("timezone", "UTC"))

    bbox = None
    if doc.get("bbox") is not None:
        b = doc["bbox"]
        try:
            bbox = BBox(**{k: float(b[k]) for k in ("lat_min", "lat_max", "lon_min", "lon_max")})
        except (TypeError, KeyError, ValueError):
            raise ConfigError(f"{file}: bbox needs numbers lat_min, lat_max, lon_min, "
                              "lon_max") from None
        if not (bbox.lat_min < bbox.lat_max and bbox.lon_min < bbox.lon_max):
            raise ConfigError(f"{file}: bbox: min must be below max")

    value_maps: dict[str, dict[str, str]] = {}
    for col, vmap in mapping("value_maps").items():
        if not isinstance(vmap, dict) or not vmap:
            raise ConfigError(f"{file}: value_maps.{col} must map raw values to public values")
        if col not in columns:
            raise ConfigError(f"{file}: value_maps.{col}: the column is not mapped in columns")
        out: dict[str, str] = {}
        for raw, public in vmap.items():
            key = str(raw).strip().lower()
            if key in out and out[key] != str(public):
                raise ConfigError(f"{file}: value_maps.{col}: {raw!r} is mapped twice (keys "
                                  "are compared case-insensitively)")
            out[key] = str(public)
        value_maps[col] = out

    domains: dict[str, tuple[str, ...]] = {}
    labels: dict[str, str] = {}
    for col, values in mapping("domains").items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{file}: domains.{col} must be a non-empty list")
        domains[col] = tuple(str(v) for v in values)
        labels[col] = f"domains.{col} list"
    categories: tuple[tuple[str, str], ...] = ()
    if "categories" in doc:
        if "request_type" not in names:
            raise ConfigError(f"{file}: categories apply to sources with request_type")
        categories = _ref_csv(file, "categories", doc["categories"])
        domains["request_type"] = tuple(i for i, _ in categories)
        labels["request_type"] = f"categories file {Path(doc['categories']).name}"
    districts: tuple[tuple[str, str], ...] = ()
    if "districts" in doc:
        districts = _ref_csv(file, "districts", doc["districts"])

    polygons = None
    dspec = doc.get("district")
    if dspec is not None:
        if "district_id" not in names:
            raise ConfigError(f"{file}: district: {source!r} has no district_id")
        if not isinstance(dspec, dict):
            raise ConfigError(f"{file}: district must be {{column: district_id}} or "
                              "{polygons: <geojson>, id_property: .., name_property: ..}")
        if "column" in dspec:
            if set(dspec) != {"column"} or dspec["column"] not in columns:
                raise ConfigError(f"{file}: district.column must name a mapped canonical "
                                  f"column (mapped: {', '.join(columns)})")
            if dspec["column"] != "district_id":
                columns["district_id"] = columns[dspec["column"]]
        else:
            if not {"lat", "lon"} <= set(columns):
                raise ConfigError(f"{file}: district.polygons needs lat and lon mapped")
            polygons = _polygons(file, dspec)
            if "district_id" in columns:
                raise ConfigError(f"{file}: district.polygons gives district_id; do not also "
                                  "map columns.district_id")
            if not districts:
                districts = tuple(zip(polygons.ids, polygons.names, strict=True))
            extra = sorted(set(polygons.ids) - {i for i, _ in districts})
            if extra:
                raise ConfigError(f"{file}: district.polygons has id(s) {', '.join(extra)} "
                                  "missing in the districts reference file")
    if districts:
        domains["district_id"] = tuple(i for i, _ in districts)
        labels["district_id"] = (f"districts file {Path(doc['districts']).name}"
                                 if "districts" in doc else "district polygons")

    units: dict[str, str] = {}
    for unit, col in mapping("units").items():
        if not isinstance(col, str) or (col not in columns and col not in {
                o for o, _ in schema.pseudonyms}):
            raise ConfigError(f"{file}: units.{unit}: {col!r} is not a mapped canonical column "
                              "(nor a pseudonym of mapped identifiers)")
        if col in {o for o, _ in schema.pseudonyms}:
            srcs = dict(schema.pseudonyms)[col]
            if not any(s in columns for s in srcs):
                raise ConfigError(f"{file}: units.{unit}: {col} needs one of "
                                  f"{', '.join(srcs)} mapped")
        units[str(unit)] = col

    patterns = {c: str(p) for c, p in mapping("patterns").items()}
    required_raw = doc.get("required_raw")
    if required_raw is None:
        required_raw = sorted({r for c in schema.columns if c.required and c.name in columns
                               for r in _raw_of(columns[c.name])})
    if not isinstance(required_raw, list) or not all(isinstance(r, str) for r in required_raw):
        raise ConfigError(f"{file}: required_raw must be a list of raw column names")
    name = str(doc.get("name") or file.stem)
    return Profile(
        name=name, source=source, columns=columns, required_raw=tuple(required_raw),
        timestamp_format=fmts, timezone=zone, bbox=bbox, value_maps=value_maps,
        description=str(doc.get("description", "")), domains=domains, patterns=patterns,
        strict_value_maps=True, units=units, personal=personal, categories=categories,
        districts=districts, district_polygons=polygons, file=str(file),
        domain_labels=labels,
    )


def _raw_of(expr: str) -> tuple[str, ...]:
    return tuple(m.replace('""', '"') for m in re.findall(r'"((?:[^"]|"")+)"', expr))


def shipped_profiles() -> dict[str, Path]:
    """Shipped profile name -> file (transforms/profiles/<name>.yaml)."""
    return {p.stem: p for p in sorted(SHIPPED_DIR.glob("*.yaml"))}


_CACHE: dict[tuple[str, float], Profile] = {}


def resolve_profile_path(name: str, base: Path | None = None) -> Path | None:
    """The file of profile ``name``: a shipped name, or a path (relative to ``base``)."""
    if name == "opencity":
        return None
    shipped = shipped_profiles()
    if name in shipped:
        return shipped[name]
    if name.endswith((".yaml", ".yml")) or "/" in name:
        p = Path(name)
        if not p.is_absolute() and base is not None:
            p = base / p
        return p
    raise ConfigError(f"unknown input profile {name!r}; known: opencity, "
                      f"{', '.join(shipped)} (or the path of a profile .yaml file)")


def get_profile(source: str, name: str | Path = "opencity") -> Profile:
    """The profile ``name`` for ``source`` ('opencity' = canonical columns; a shipped name,
    or the path of a profile file)."""
    name = str(name)
    if name == "opencity":
        return canonical_profile(source)
    path = resolve_profile_path(name)
    assert path is not None
    if not path.is_file():
        raise ConfigError(f"input profile {name!r}: no such file {path}")
    key = (str(path.resolve()), path.stat().st_mtime)
    profile = _CACHE.get(key)
    if profile is None:
        profile = _CACHE[key] = load_profile(path)
    if profile.source != source:
        raise ConfigError(f"profile {profile.where} reads {profile.source!r} files, not "
                          f"{source!r}")
    return profile
