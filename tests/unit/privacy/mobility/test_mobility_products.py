import hashlib
import math
from datetime import date, datetime, timedelta

import duckdb
import numpy as np
import pyarrow as pa
import pytest

from opencity.errors import ConfigError, DataQualityError
from privacy.dp import DPBudget, bounded_aggregate, release_info
from privacy.dp.params import ContributionBounds
from privacy.mobility.products import (
    MobilityConfig,
    compute_products,
    gyration_bins,
    home_regions,
    od_transitions,
    prepare_events,
    product_metadata,
)

DAY = date(2026, 10, 5)  # the day the conftest fixtures generate
TOWERS = pa.table({
    "cell_id": ["c1", "c2", "c3", "c4"],
    "lat": [52.50, 52.51, 52.60, 52.50],
    "lon": [13.40, 13.40, 13.50, 13.60],
    "region_id": ["A", "A", "B", "C"],
})


def _ts(hour, minute=0, day=DAY):
    return datetime(day.year, day.month, day.day, hour, minute)


def _cdr(rows):
    """rows: (subscriber, hour, minute, cell) -> CDR table with UTC timestamps."""
    return pa.table({
        "subscriber_pid": [r[0] for r in rows],
        "event_time": pa.array([_ts(r[1], r[2]) if isinstance(r[1], int) else r[1]
                                for r in rows], pa.timestamp("us", tz="UTC")),
        "cell_id": [r[3] for r in rows],
    })


def _uid(unit: str) -> int:
    """The privacy unit id the prepared events carry: the first 15 hex digits of md5(unit)
    (the raw pseudonym itself is not kept past the scan)."""
    return int(hashlib.md5(unit.encode()).hexdigest()[:15], 16)


def _prepare(cdr, towers=TOWERS, day=DAY):
    con = duckdb.connect()
    return prepare_events(con, con.from_arrow(cdr), con.from_arrow(towers), day), con


def test_prepare_sets_aside_rows_with_reasons():
    cdr = _cdr([
        ("s1", 8, 0, "c1"),
        ("s1", 9, 0, "c9"),  # unknown cell
        ("s2", _ts(23, 0, DAY - timedelta(days=1)), None, "c1"),  # the day before
        ("s2", 10, 0, None),  # missing cell
        (None, 10, 0, "c1"),  # missing unit
        ("s3", 12, 0, "c3"),
    ])
    prep, _ = _prepare(cdr)
    assert prep.rows_in == 6
    assert prep.quarantined == {"missing_value": 2, "outside_date": 1, "unknown_cell": 1}
    assert prep.unknown_cells == ("c9",)
    assert prep.rows_used == 2 and prep.n_units == 2
    assert prep.regions == ("A", "B", "C")


def test_no_event_on_the_day_is_a_clear_error():
    cdr = _cdr([("s1", _ts(8, 0, date(2026, 10, 1)), None, "c1")])
    with pytest.raises(DataQualityError, match=r"no usable event on 2026-10-05.*outside_date"):
        _prepare(cdr)


def test_bad_towers_name_row_column_value():
    bad = TOWERS.set_column(1, "lat", pa.array([52.5, 152.0, 52.6, 52.5]))
    with pytest.raises(DataQualityError, match=r"row 2: column lat has invalid value '152.0'"):
        _prepare(_cdr([("s1", 8, 0, "c1")]), towers=bad)
    dup = TOWERS.set_column(0, "cell_id", pa.array(["c1", "c1", "c3", "c4"]))
    with pytest.raises(DataQualityError, match="cell_id 'c1' appears 2 times"):
        _prepare(_cdr([("s1", 8, 0, "c1")]), towers=dup)


def test_missing_unit_column_and_string_time():
    with pytest.raises(DataQualityError, match="privacy-unit"):
        _prepare(_cdr([("s1", 8, 0, "c1")]).drop_columns(["subscriber_pid"]))
    t = pa.table({"subscriber_id": ["x"], "event_time": ["2026-10-05 08:00"], "cell_id": ["c1"]})
    with pytest.raises(DataQualityError, match="event_time has type VARCHAR"):
        _prepare(t)


def test_od_transitions_follow_time_order_and_skip_repeats():
    cdr = _cdr([
        ("s1", 9, 0, "c3"),   # B
        ("s1", 8, 0, "c1"),   # A (earlier; input order does not matter)
        ("s1", 8, 30, "c2"),  # A again: no move
        ("s1", 18, 0, "c1"),  # A
        ("s2", 7, 0, "c4"),   # C
        ("s2", 20, 0, "c4"),  # C: no move
    ])
    prep, _ = _prepare(cdr)
    moves = sorted(od_transitions(prep.events).fetchall())
    assert moves == [(_uid("s1"), "A", "B"), (_uid("s1"), "B", "A")]


def test_home_is_modal_night_region():
    cdr = _cdr([
        ("s1", 1, 0, "c3"), ("s1", 2, 0, "c3"), ("s1", 3, 0, "c1"),  # B twice at night
        ("s1", 12, 0, "c1"), ("s1", 13, 0, "c1"), ("s1", 14, 0, "c1"),  # A by day: ignored
        ("s2", 12, 0, "c4"),  # no night event: no home
    ])
    prep, _ = _prepare(cdr)
    cfg = MobilityConfig(DPBudget(1.0))
    assert home_regions(prep.events, cfg).fetchall() == [(_uid("s1"), "B")]


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4, 5])
def test_home_ties_are_broken_by_the_keyed_hash(seed):
    """s1 has one night event in each of A, B, C (a three-way tie): its home is the region
    with the smallest SHA-256 of (seed, uid, region); s2's two B events beat one A event."""
    cdr = _cdr([
        ("s1", 1, 0, "c1"), ("s1", 2, 0, "c3"), ("s1", 3, 0, "c4"),
        ("s2", 1, 0, "c3"), ("s2", 2, 0, "c3"), ("s2", 3, 0, "c1"),
    ])
    prep, _ = _prepare(cdr)
    cfg = MobilityConfig(DPBudget(1.0), seed=seed)
    uid = _uid("s1")
    want = min("ABC", key=lambda r: (
        hashlib.sha256(f"{seed}\x1f{uid}\x1f{r}".encode()).hexdigest(), r))
    assert sorted(home_regions(prep.events, cfg).fetchall()) == sorted(
        [(uid, want), (_uid("s2"), "B")])


def test_radius_of_gyration_matches_independent_haversine():
    cdr = _cdr([("s1", 8, 0, "c1"), ("s1", 9, 0, "c3"), ("s1", 10, 0, "c4"),
                ("s2", 8, 0, "c2")])
    prep, _ = _prepare(cdr)
    cfg = MobilityConfig(DPBudget(1.0))
    got = {u: (rg, b) for u, rg, b in gyration_bins(prep.events, cfg).fetchall()}
    lat = np.radians([52.50, 52.60, 52.50])
    lon = np.radians([13.40, 13.50, 13.60])
    clat, clon = lat.mean(), lon.mean()
    # Haversine distance to the centroid, Earth radius 6371 km.
    a = np.sin((lat - clat) / 2) ** 2 + np.cos(lat) * np.cos(clat) * np.sin((lon - clon) / 2) ** 2
    d = 2 * 6371.0 * np.arcsin(np.sqrt(a))
    want = math.sqrt(np.mean(d**2))
    assert got[_uid("s1")][0] == pytest.approx(want, rel=0.01)
    assert got[_uid("s1")][1] == 5.0  # ~7.9 km falls in [5, 10)
    assert got[_uid("s2")] == (0.0, 0.0)


@pytest.mark.parametrize("kw", [
    {"shares": (("hourly_presence", 0.7), ("od_matrix", 0.5))},
    {"shares": (("teleport", 0.1),)},
    {"shares": (("gyration", math.nan),)},
    {"max_region_hours": 0},
    {"night_hours": (25,)},
    {"gyration_bins_km": (1.0, 2.0)},
    {"gyration_bins_km": (0.0, 2.0, 1.0)},
    {"gyration_bins_km": (0.0, math.inf)},
    {"seed": -1},
])
def test_config_rejects(kw):
    with pytest.raises(ConfigError):
        MobilityConfig(DPBudget(1.0), **kw)


def test_delta_must_be_below_one_over_n():
    cdr = _cdr([(f"s{i}", 8, 0, "c1") for i in range(100)])
    prep, _ = _prepare(cdr)
    with pytest.raises(ConfigError, match="1/n"):
        compute_products(prep, MobilityConfig(DPBudget(1.0, 0.05)), random_state=1)


def test_products_shape_and_post_processing(small_day):
    cdr, towers = small_day
    prep, _ = _prepare(cdr, towers)
    cfg = MobilityConfig(DPBudget(1.0, 1e-7), seed=5)
    out = compute_products(prep, cfg, random_state=3)
    n_regions = len(prep.regions)
    assert out["hourly_presence"].num_rows == n_regions * 24
    assert out["home_region"].num_rows == n_regions
    assert out["gyration"].num_rows == len(cfg.gyration_bins_km)
    for t in out.values():
        assert t.schema.field("value").type == pa.int64()
        assert min((v for v in t.column("value").to_pylist() if v is not None), default=0) >= 0
        assert "subscriber_id" not in t.column_names and "unit" not in t.column_names
    od = out["od_matrix"]
    # Every ordered pair of distinct regions is listed; the pairs that did not pass private
    # selection say so in the row (status, reason naming the threshold) and carry no value.
    assert od.num_rows == n_regions * (n_regions - 1)
    assert all(o != d for o, d in zip(od.column("origin").to_pylist(),
                                     od.column("destination").to_pylist(), strict=True))
    rows = od.to_pylist()
    published = [r for r in rows if r["status"] == "published"]
    withheld = [r for r in rows if r["status"] == "withheld"]
    assert published and len(published) + len(withheld) == len(rows)
    threshold = release_info(od)["partition_selection"]["threshold_units"]
    assert all(r["value"] >= threshold and r["withheld_reason"] is None for r in published)
    assert all(r["value"] is None and r["noise_std"] is None
               and f"({threshold} noisy subscribers)" in r["withheld_reason"] for r in withheld)
    meta = product_metadata("od_matrix", od, cfg)
    assert (meta["published_rows"], meta["withheld_rows"]) == (len(published), len(withheld))


def test_od_with_public_keys_publishes_every_pair(small_day):
    """delta = 0 (the stored policy): every pair has a noisy value, nothing is withheld."""
    cdr, towers = small_day
    prep, _ = _prepare(cdr, towers)
    cfg = MobilityConfig(DPBudget(1.0, 0.0), seed=5)
    od = compute_products(prep, cfg, random_state=3)["od_matrix"]
    n = len(prep.regions)
    assert od.num_rows == n * (n - 1)
    assert set(od.column("status").to_pylist()) == {"published"}
    assert od.column("withheld_reason").null_count == od.num_rows
    assert od.column("value").null_count == 0
    assert release_info(od)["key_source"] == "public"
    meta = product_metadata("od_matrix", od, cfg)
    assert meta["selection_threshold_subscribers"] is None and meta["withheld_rows"] == 0
    assert cfg.spent.delta == 0.0


def test_heavy_subscriber_moves_each_product_by_at_most_its_bound(small_day):
    """A subscriber with 10,000 events across all towers changes <= L0 keys by <= 1 each."""
    cdr, towers = small_day
    rng = np.random.default_rng(0)
    n = 10_000
    heavy = pa.table({
        "subscriber_id": pa.array(["+490000000001"] * n),
        "imsi": pa.array(["262000000000001"] * n),
        "event_time": pa.array(
            [_ts(0) + timedelta(seconds=int(s)) for s in np.sort(rng.integers(0, 86_399, n))],
            pa.timestamp("us", tz="UTC")),
        "cell_id": pa.array(rng.choice(towers.column("cell_id").to_pylist(), n)),
        "event_type": pa.array(["call"] * n),
    }).cast(cdr.schema)
    cfg = MobilityConfig(DPBudget(1.0), seed=9)
    p0, _ = _prepare(cdr, towers)
    p1, _ = _prepare(pa.concat_tables([cdr, heavy]), towers)
    views = {
        "hourly_presence": (lambda p: p.events, ["region_id", "hour"], cfg.max_region_hours),
        "od_matrix": (lambda p: od_transitions(p.events), ["origin", "destination"],
                      cfg.max_od_pairs),
        "home_region": (lambda p: home_regions(p.events, cfg), ["region_id"], 1),
        "gyration": (lambda p: gyration_bins(p.events, cfg), ["bin_lower_km"], 1),
    }
    for name, (view, by, l0) in views.items():
        aggs = []
        for p in (p0, p1):
            t = bounded_aggregate(view(p), unit="unit", by=by, statistic="count_distinct",
                                  bounds=ContributionBounds(l0, 1), seed=cfg.seed)
            aggs.append({tuple(r[k] for k in by): r["n_units"] for r in t.to_pylist()})
        diffs = [aggs[1].get(k, 0) - aggs[0].get(k, 0) for k in set(aggs[0]) | set(aggs[1])]
        assert all(0 <= d <= 1 for d in diffs), name
        assert sum(diffs) <= l0, name
        assert sum(diffs) >= 1, name  # the heavy subscriber does show up somewhere


def test_utility_busy_regions_within_5_percent_at_epsilon_1(busy_day):
    """Median relative error of busy regions < 5 % at epsilon = 1 per subscriber per day."""
    cdr, towers = busy_day
    prep, con = _prepare(cdr, towers)
    out = compute_products(prep, MobilityConfig(DPBudget(1.0), seed=1), random_state=11)
    # Truth from plain SQL on the raw join, without any bounding.
    con.register("raw_cdr", cdr)
    con.register("raw_towers", towers)
    truth_hourly = {(r, h): n for r, h, n in con.execute("""
        SELECT region_id, hour(event_time AT TIME ZONE 'UTC')::INT,
               count(DISTINCT subscriber_id)
        FROM raw_cdr JOIN raw_towers USING (cell_id) GROUP BY ALL""").fetchall()}
    truth_home = {r: n for r, n in con.execute("""
        SELECT region_id, count(*) FROM (
            SELECT subscriber_id, arg_max(region_id, n) AS region_id FROM (
                SELECT subscriber_id, region_id, count(*) AS n FROM raw_cdr
                JOIN raw_towers USING (cell_id)
                WHERE hour(event_time AT TIME ZONE 'UTC') IN (22, 23, 0, 1, 2, 3, 4, 5)
                GROUP BY ALL) GROUP BY subscriber_id) GROUP BY region_id""").fetchall()}

    def median_rel_error(table, keys, truth):
        rows = [(tuple(r[k] for k in keys), r["value"]) for r in table.to_pylist()]
        true = np.array([truth.get(k if len(k) > 1 else k[0], 0) for k, _ in rows], float)
        noisy = np.array([v for _, v in rows], float)
        busy = true >= np.quantile(true, 0.75)
        return float(np.median(np.abs(noisy[busy] - true[busy]) / true[busy]))

    err_hourly = median_rel_error(out["hourly_presence"], ["region_id", "hour"], truth_hourly)
    err_home = median_rel_error(out["home_region"], ["region_id"], truth_home)
    print(f"median relative error, busy region-hours {err_hourly:.4f}, homes {err_home:.4f}")
    assert err_hourly < 0.05, err_hourly
    assert err_home < 0.05, err_home
