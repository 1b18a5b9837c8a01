"""Parameters of a generation run (light module: imported by the CLI before heavy libraries)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date

from opencity.errors import ConfigError

DEFAULT_START = date(2026, 10, 5)  # a Monday
DEFAULT_CHUNK_ROWS = 1_000_000
MAX_SCALE = 1_000.0
MAX_DAYS = 366


@dataclass(frozen=True)
class SampleConfig:
    """Parameters of one generation run (validated on construction).

    Attributes:
        seed: non-negative integer seed; same seed -> same files.
        scale: activity multiplier (> 0, at most 1,000): ~100,000 CDR events, ~3,000 service
            requests, ~2,000 households and ~20,000 transit taps per 14 days at scale 1.
        start: first day of the window (UTC days).
        days: number of days (1..366).
        chunk_rows: rows per Parquet part file of CDR events and meter readings.
    """

    seed: int = 42
    scale: float = 1.0
    start: date = DEFAULT_START
    days: int = 14
    chunk_rows: int = DEFAULT_CHUNK_ROWS

    def __post_init__(self) -> None:
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"seed must be a non-negative integer, got {self.seed!r}")
        if isinstance(self.scale, bool) or not isinstance(self.scale, (int, float)):
            raise ConfigError(f"scale must be a number, got {self.scale!r}")
        if not math.isfinite(self.scale) or not 0 < self.scale <= MAX_SCALE:
            raise ConfigError(f"scale must be > 0 and at most {MAX_SCALE:g}, got {self.scale!r}")
        if not isinstance(self.start, date):
            raise ConfigError(f"start must be a date (YYYY-MM-DD), got {self.start!r}")
        if isinstance(self.days, bool) or not isinstance(self.days, int) or not (
                1 <= self.days <= MAX_DAYS):
            raise ConfigError(f"days must be an integer from 1 to {MAX_DAYS}, got {self.days!r}")
        if isinstance(self.chunk_rows, bool) or not isinstance(self.chunk_rows, int) or (
                self.chunk_rows < 1):
            raise ConfigError(f"chunk_rows must be a positive integer, got {self.chunk_rows!r}")
