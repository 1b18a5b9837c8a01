"""The benchmark script under test, loaded from bench/ (not a package)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def bench_engines():
    """bench/bench_mobility_engines.py as a module."""
    spec = importlib.util.spec_from_file_location(
        "bench_mobility_engines", ROOT / "bench" / "bench_mobility_engines.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
