"""Shared helpers of the generator: seeded random streams, vectorized id formatting, calendar.

Everything here is pure (no I/O). Times are handled as int64 microseconds since the Unix epoch
in UTC; the city's daily rhythms are defined in its local time zone (:data:`CITY_TZ`).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pyarrow as pa

from transforms.schemas import UTC_TS

CITY_TZ = ZoneInfo("Europe/Berlin")
US_PER_S = 1_000_000
US_PER_H = 3600 * US_PER_S

# Independent random streams, one per table (changing one table never shifts another).
STREAMS = {
    "city": 1,
    "towers": 2,
    "names": 3,
    "subscribers": 4,
    "cdr": 5,
    "requests": 6,
    "households": 7,
    "readings": 8,
    "transit": 9,
    "taps": 10,
    "waste": 11,
}


def rng_for(seed: int, stream: str, *keys: int) -> np.random.Generator:
    """A numpy Generator for one named stream (and optional block index) of a seed."""
    return np.random.default_rng(np.random.SeedSequence([seed, STREAMS[stream], *keys]))


def format_ids(values: np.ndarray, width: int, prefix: str = "",
               alphabet: str = "0123456789") -> pa.Array:
    """Format non-negative integers as fixed-width ids, e.g. ``prefix + zero-padded digits``.

    Vectorized: loops over the ``width`` character positions, never over rows.

    Args:
        values: non-negative integers (< len(alphabet) ** width).
        width: number of digits after the prefix.
        prefix: ASCII prefix.
        alphabet: digit characters (e.g. "0123456789ABCDEF" for hex).
    """
    v = np.asarray(values, dtype=np.uint64).copy()
    n = v.shape[0]
    lut = np.frombuffer(alphabet.encode("ascii"), dtype=np.uint8)
    base = np.uint64(len(alphabet))
    p = prefix.encode("ascii")
    out = np.empty((n, len(p) + width), dtype=np.uint8)
    if p:
        out[:, : len(p)] = np.frombuffer(p, dtype=np.uint8)
    for pos in range(len(p) + width - 1, len(p) - 1, -1):
        out[:, pos] = lut[(v % base).astype(np.intp)]
        v //= base
    strings = out.view(f"S{len(p) + width}").ravel() if n else np.array([], dtype="S1")
    return pa.array(strings, type=pa.binary()).cast(pa.string())


def unique_codes(rng: np.random.Generator, n: int, modulus: int) -> np.ndarray:
    """``n`` distinct pseudo-random integers in ``[0, modulus)`` (an affine bijection of 0..n-1).

    ``modulus`` must be a power of 10 or of 2: a multiplier coprime with 10 is then a bijection.
    """
    if n > modulus:
        raise ValueError(f"cannot draw {n} distinct codes below {modulus}")
    hi = max(min(modulus // 3, 2**62 // max(n, 1)), 8)
    a = int(rng.integers(hi // 2, hi)) | 1
    while a % 5 == 0:
        a += 2
    b = int(rng.integers(0, modulus))
    i = np.arange(n, dtype=np.uint64)
    return (i * np.uint64(a) + np.uint64(b)) % np.uint64(modulus)


def day_starts_us(start: date, days: int) -> np.ndarray:
    """UTC midnight of each day of the window, in epoch microseconds (length ``days + 1``)."""
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    first = datetime.combine(start, time(0), tzinfo=UTC)
    base = (first - epoch) // timedelta(microseconds=1)
    return base + np.arange(days + 1, dtype=np.int64) * 24 * US_PER_H


def local_offset_hours(start: date, days: int) -> np.ndarray:
    """UTC offset of the city (hours, e.g. 2 in summer) at noon UTC of each day of the window."""
    out = np.empty(days, dtype=np.int64)
    for d in range(days):  # calendar days, not data rows
        noon = datetime.combine(start + timedelta(days=d), time(12), tzinfo=UTC)
        out[d] = int(noon.astimezone(CITY_TZ).utcoffset().total_seconds() // 3600)
    return out


def weekdays(start: date, days: int) -> np.ndarray:
    """Weekday (0 = Monday) of each day of the window."""
    return (start.weekday() + np.arange(days)) % 7


def local_seconds_to_utc(day: np.ndarray, local_s: np.ndarray, starts: np.ndarray,
                         offsets_h: np.ndarray) -> np.ndarray:
    """Epoch microseconds of events given as (UTC day index, seconds since local midnight).

    The result always lies inside the UTC day (local hours before the offset wrap around to the
    end of the same UTC day, which is also night), so the window's UTC days stay exact.
    """
    utc_s = (local_s - offsets_h[day] * 3600) % 86400
    return starts[day] + utc_s.astype(np.int64) * US_PER_S


def ts_array(us: np.ndarray) -> pa.Array:
    """Epoch microseconds -> Arrow ``timestamp[us, tz=UTC]``."""
    return pa.array(np.asarray(us, dtype=np.int64), type=pa.int64()).cast(UTC_TS)


def sample_profile(rng: np.random.Generator, cdf: np.ndarray, n: int) -> np.ndarray:
    """Draw ``n`` indices from a discrete distribution given by its cumulative sums."""
    return np.searchsorted(cdf, rng.random(n) * cdf[-1], side="right")


def choose_rows(rng: np.random.Generator, cdf_rows: np.ndarray) -> np.ndarray:
    """One index per row of a matrix of row-wise cumulative weights (vectorized)."""
    u = rng.random(cdf_rows.shape[0]) * cdf_rows[:, -1]
    return (cdf_rows < u[:, None]).sum(axis=1)
