"""Fixtures for the sample-data generator tests: one scale-1 city per session."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pytest
from sample_helpers import read_raw


@dataclass(frozen=True)
class Generated:
    root: Path
    counts: dict[str, int]

    def read(self, rel: str) -> pa.Table:
        return read_raw(self.root, rel)


@pytest.fixture(scope="session")
def city(tmp_path_factory: pytest.TempPathFactory) -> Generated:
    """The default city (seed 42, scale 1, 14 days from Monday 2026-10-05)."""
    from sample_data import generate

    out = tmp_path_factory.mktemp("city") / "raw"
    return Generated(out, generate(out, seed=42, scale=1.0, progress=False))
