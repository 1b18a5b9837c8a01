"""Orchestrates the synthetic city: builds every table and writes the raw sample-data layout.

The layout (file names and columns) is the contract in the docstring of
:mod:`transforms.schemas`. Output is byte-identical for the same seed, scale, start, days and
``chunk_rows`` (and the same library versions).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from datetime import date
from pathlib import Path

import pyarrow as pa
from tqdm import tqdm

from opencity.errors import ConfigError
from opencity.io import restricted_dir
from sample_data import io
from sample_data.cdr import cdr_blocks, make_subscribers, n_blocks
from sample_data.city import make_city
from sample_data.config import DEFAULT_CHUNK_ROWS, DEFAULT_START, SampleConfig
from sample_data.meters import make_households, make_registry, n_reading_blocks, readings_blocks
from sample_data.people import make_pools
from sample_data.service_requests import make_request_types, make_service_requests
from sample_data.transit import make_network, taps_blocks
from sample_data.waste import make_pickups


def _check_out_dir(out_dir: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"output path {out_dir} exists and is not a directory; "
                          "choose another --out")
    if out_dir.is_dir() and not os.access(out_dir, os.W_OK | os.X_OK):
        raise ConfigError(f"output directory {out_dir} is not writable; choose another --out")
    try:
        restricted_dir(out_dir)  # raw data: names, phones, e-mails, addresses
    except OSError as err:
        raise ConfigError(f"cannot create output directory {out_dir}: {err.strerror}") from err
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise ConfigError(f"output directory {out_dir} is not writable; choose another --out")


def _progress(blocks: Iterable[pa.Table], total: int, desc: str, enabled: bool
              ) -> Iterator[pa.Table]:
    with tqdm(total=total, desc=desc, unit="block", disable=not enabled, leave=False) as bar:
        for table in blocks:
            yield table
            bar.update(1)


def generate(out_dir: str | os.PathLike[str], seed: int = 42, scale: float = 1.0,
             start: date = DEFAULT_START, days: int = 14, progress: bool = True, *,
             chunk_rows: int = DEFAULT_CHUNK_ROWS) -> dict[str, int]:
    """Generate the synthetic city into ``out_dir`` (layout of :mod:`transforms.schemas`).

    Args:
        out_dir: output directory (created if missing; our files in it are replaced).
        seed: random seed (non-negative integer).
        scale: activity multiplier, > 0 (CDR events ~ 100,000 * scale per 14 days).
        start: first UTC day of the window.
        days: window length in days.
        progress: show tqdm progress bars on stderr.
        chunk_rows: rows per Parquet part file (CDR events, meter readings).

    Returns:
        Row count per written file, keyed by its path relative to ``out_dir`` (POSIX style).

    Raises:
        ConfigError: invalid parameter or unusable output directory.
    """
    cfg = SampleConfig(seed=seed, scale=scale, start=start, days=days, chunk_rows=chunk_rows)
    out = Path(out_dir)
    _check_out_dir(out)
    counts: dict[str, int] = {}
    city = make_city(cfg.seed, cfg.scale)
    counts["city/districts.csv"] = io.write_csv(city.districts, out / "city" / "districts.csv")
    counts["city/towers.csv"] = io.write_csv(city.towers, out / "city" / "towers.csv")
    counts["city/request_types.csv"] = io.write_csv(make_request_types(),
                                                    out / "city" / "request_types.csv")
    pools = make_pools(cfg.seed, city.n_districts)

    subs = make_subscribers(cfg.seed, city, cfg.scale, cfg.days)
    blocks = cdr_blocks(cfg.seed, city, subs, cfg.start, cfg.days)
    parts = io.write_parts(_progress(blocks, n_blocks(subs), "CDR events", progress),
                           out / "cdr", cfg.chunk_rows)
    counts.update({f"cdr/{name}": rows for name, rows in parts.items()})

    requests = make_service_requests(cfg.seed, city, pools, cfg.scale, cfg.start, cfg.days)
    counts["service_requests/requests.csv"] = io.write_csv(
        requests, out / "service_requests" / "requests.csv")

    households = make_households(cfg.seed, city, pools, cfg.scale)
    registry = make_registry(cfg.seed, city, households, cfg.start)
    counts["meters/registry.csv"] = io.write_csv(registry, out / "meters" / "registry.csv")
    blocks = readings_blocks(cfg.seed, registry, cfg.start, cfg.days)
    parts = io.write_parts(
        _progress(blocks, n_reading_blocks(registry), "meter readings", progress),
        out / "meters" / "readings", cfg.chunk_rows)
    counts.update({f"meters/readings/{name}": rows for name, rows in parts.items()})

    net = make_network(cfg.seed, city, pools)
    counts["transit/stops.csv"] = io.write_csv(net.stops, out / "transit" / "stops.csv")
    counts["transit/taps.parquet"] = io.write_parquet(
        taps_blocks(cfg.seed, net, cfg.scale, cfg.start, cfg.days),
        out / "transit" / "taps.parquet")

    pickups = make_pickups(cfg.seed, city, households, cfg.start, cfg.days)
    counts["waste/pickups.parquet"] = io.write_parquet([pickups], out / "waste" / "pickups.parquet")
    return counts
