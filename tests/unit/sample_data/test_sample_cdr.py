"""CDR events: identifiers, heavy tails, rhythms, anchors, visitors, chunked part files."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from sample_data import generate


@pytest.fixture(scope="module")
def cdr(city):
    df = city.read("cdr").to_pandas()
    local = df.event_time.dt.tz_convert("Europe/Berlin")
    df["day"] = df.event_time.dt.date
    df["weekend"] = df.event_time.dt.day_of_week >= 5
    df["local_hour"] = local.dt.hour
    return df


def test_identifiers_are_msisdn_and_imsi_one_to_one(cdr):
    assert cdr.subscriber_id.str.fullmatch(r"\+49\d{11}").all()  # E.164, German mobile
    assert cdr.subscriber_id.str.startswith("+4915").all()
    assert cdr.imsi.str.fullmatch(r"262\d{12}").all()  # 15 digits, MCC 262
    pairs = cdr[["subscriber_id", "imsi"]].drop_duplicates()
    assert pairs.subscriber_id.is_unique and pairs.imsi.is_unique


def test_heavy_tail_top_decile_holds_over_30_percent(cdr):
    per_sub = cdr.subscriber_id.value_counts().sort_values(ascending=False)
    top = per_sub.iloc[: len(per_sub) // 10].sum()
    assert top / per_sub.sum() > 0.30


def test_weekday_busier_than_weekend_and_day_busier_than_night(cdr):
    per_day = cdr.groupby(["day", "weekend"]).size().reset_index(name="n")
    weekday = per_day[~per_day.weekend].n.mean()
    weekend = per_day[per_day.weekend].n.mean()
    assert weekday / weekend > 1.15
    per_hour = cdr.local_hour.value_counts()
    night = per_hour.reindex(range(1, 5)).mean()
    day = per_hour.reindex(range(10, 18)).mean()
    assert night / day < 0.2


def test_commuters_are_elsewhere_during_weekday_office_hours(cdr):
    wk = cdr[~cdr.weekend]
    work = wk[wk.local_hour.between(10, 15)]
    home = wk[(wk.local_hour >= 20) | (wk.local_hour <= 6)]
    mode_work = work.groupby("subscriber_id").cell_id.agg(lambda s: s.mode().iloc[0])
    mode_home = home.groupby("subscriber_id").cell_id.agg(lambda s: s.mode().iloc[0])
    counts = cdr.subscriber_id.value_counts()
    busy = counts[counts >= 40].index.intersection(mode_work.index).intersection(mode_home.index)
    moved = (mode_work[busy] != mode_home[busy]).mean()
    assert 0.3 < moved < 0.9  # commuters move, non-commuters stay near home


def test_visitors_appear_only_a_few_days(cdr):
    days_seen = cdr.groupby("subscriber_id").day.nunique()
    first = cdr.groupby("subscriber_id").day.min()
    # Some subscribers start after the first day and are seen on at most 4 days.
    visitors = days_seen[(days_seen <= 4) & (first > cdr.day.min())]
    assert len(visitors) > 50
    assert (days_seen >= 12).mean() > 0.5  # most subscribers are residents


def test_some_events_at_random_towers(cdr):
    per_sub = cdr.groupby("subscriber_id").cell_id.nunique()
    assert per_sub.median() >= 3


def test_tiny_chunks_give_many_parts_with_the_same_events(tmp_path):
    default = generate(tmp_path / "a", seed=3, scale=0.05, days=3, progress=False)
    chunked = generate(tmp_path / "b", seed=3, scale=0.05, days=3, progress=False,
                       chunk_rows=211)
    parts = sorted((tmp_path / "b" / "cdr").glob("part-*.parquet"))
    assert len(parts) > 3
    sizes = [pq.ParquetFile(p).metadata.num_rows for p in parts]
    assert all(s == 211 for s in sizes[:-1]) and 0 < sizes[-1] <= 211
    assert [chunked[f"cdr/{p.name}"] for p in parts] == sizes
    total = sum(n for k, n in default.items() if k.startswith("cdr/"))
    assert sum(sizes) == total
    a = pq.ParquetDataset(tmp_path / "a" / "cdr").read()
    b = pa.concat_tables(pq.read_table(p) for p in parts)
    assert a.equals(b)  # chunking changes the files, not the events


def test_rerun_removes_stale_parts(tmp_path):
    generate(tmp_path, seed=3, scale=0.05, days=2, progress=False, chunk_rows=500)
    n_small = len(list((tmp_path / "cdr").glob("part-*.parquet")))
    counts = generate(tmp_path, seed=3, scale=0.05, days=2, progress=False)
    remaining = sorted(p.name for p in (tmp_path / "cdr").glob("part-*.parquet"))
    assert n_small > 1 and remaining == ["part-00000.parquet"]
    assert pc.sum(pq.read_table(tmp_path / "cdr").column("subscriber_id").is_valid()).as_py() \
        == counts["cdr/part-00000.parquet"]
