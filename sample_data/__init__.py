"""Synthetic-city sample data: ``generate(out_dir, seed, scale, ...)`` writes every raw source.

Importing the package is cheap; numpy/pyarrow/Faker load on first use of ``generate``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["SampleConfig", "generate"]


def __getattr__(name: str) -> Any:
    if name == "generate":
        from sample_data.generator import generate

        return generate
    if name == "SampleConfig":
        from sample_data.config import SampleConfig

        return SampleConfig
    raise AttributeError(f"module 'sample_data' has no attribute {name!r}")
