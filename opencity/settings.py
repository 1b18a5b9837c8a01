"""One settings object per run, and the run directory layout.

Values resolve from an explicit argument (CLI flag or DAG param), then the environment
(``OPENCITY_*``), then the default (read by pydantic-settings; a bad value is a ConfigError
naming the setting). Secrets are resolved separately (opencity.secrets) and are
never part of Settings, so printing Settings never leaks one.

Run directory layout (``opencity demo --out DIR`` and every DAG run share it):

    DIR/raw/                                 landed raw inputs (restricted: personal data)
    DIR/clean/<source>/dt=YYYY-MM-DD/        ingested, typed, pseudonymized rows (restricted)
    DIR/quarantine/<source>/dt=YYYY-MM-DD/   rows that failed ingestion, with a reason
    DIR/outputs/<dataset>/dt=YYYY-MM-DD/     anonymized products (what may be published);
                                             Parquet tables only, so the tree reads as one
                                             Hive-partitioned table
    DIR/csv/<dataset>/dt=YYYY-MM-DD/         CSV copies of those tables (published as well)
    DIR/manifests/<dag_id>/<partition>.json  one manifest per run and partition
    DIR/reports/<dataset>/dt=YYYY-MM-DD/     privacy reports, validation results, Data Docs
    DIR/catalog/<dataset>/                   the local catalog (embedded publish target)
    DIR/airflow/                             AIRFLOW_HOME of the demo (SQLite metadata DB)
    DIR/state.url                            only for a run that keeps its own state DB (the
                                             demo): the URL of that state, read by
                                             ``opencity budget DIR``

The privacy-budget ledger and the release registry live in ONE state database per portal,
``Settings.state_url`` (``OPENCITY_STATE_URL``; default
``$XDG_DATA_HOME/opencity/state.sqlite``, i.e. ``~/.local/share/opencity/state.sqlite``),
never inside the run directory: a different ``run_dir`` must not open a second budget account
for the same people. It is not a DAG param (the trigger form cannot choose it); set it in the
environment of the scheduler and workers. A ``postgresql://`` URL selects the PostgreSQL
ledger (production); give the password through libpq (PGPASSWORD / a passfile), not in the URL.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, fields
from datetime import date, datetime
from pathlib import Path
from typing import Any

from opencity.errors import ConfigError
from privacy.dp.ledger import STATE_ENV, default_state_url  # noqa: F401 - re-exported

ENV_PREFIX = "OPENCITY_"


def partition_name(day: date | datetime) -> str:
    """Partition folder name for a data-interval start: ``dt=YYYY-MM-DD``."""
    return f"dt={day:%Y-%m-%d}"


@dataclass(frozen=True)
class RunLayout:
    """Paths inside a run directory (see the module docstring)."""

    root: Path

    @property
    def raw(self) -> Path:
        return self.root / "raw"

    @property
    def catalog(self) -> Path:
        return self.root / "catalog"

    @property
    def state_pointer(self) -> Path:
        """File naming the state URL of a run that keeps its own state DB (the demo)."""
        return self.root / "state.url"

    @property
    def airflow_home(self) -> Path:
        return self.root / "airflow"

    def clean(self, source: str, day: date | datetime) -> Path:
        return self.root / "clean" / source / partition_name(day)

    def quarantine(self, source: str, day: date | datetime) -> Path:
        return self.root / "quarantine" / source / partition_name(day)

    def output(self, dataset: str, day: date | datetime) -> Path:
        return self.root / "outputs" / dataset / partition_name(day)

    def csv(self, dataset: str, day: date | datetime) -> Path:
        """CSV copies of a partition's tables, in a tree beside outputs/ (Hive layout)."""
        return self.root / "csv" / dataset / partition_name(day)

    def reports(self, dataset: str, day: date | datetime) -> Path:
        return self.root / "reports" / dataset / partition_name(day)

    def manifest(self, dag_id: str, day: date | datetime) -> Path:
        return self.root / "manifests" / dag_id / f"{partition_name(day)}.json"


def _default_run_dir() -> str:
    home = os.environ.get("AIRFLOW_HOME")
    return str(Path(home) / "opencity") if home else str(Path.home() / "opencity-run")


@dataclass(frozen=True)
class Settings:
    """Typed configuration of one run.

    Attributes:
        run_dir: where every output of the run goes (see RunLayout).
        raw_dir: where raw inputs are read from (default: run_dir/raw).
        suppression_k: minimum number of distinct people behind a published count.
        microdata_k: k of the k-anonymous 311 microdata release.
        microdata_l: distinct l-diversity of the request type in every microdata class.
        microdata_max_suppression: share of records that may be removed, in [0, 1).
        publish_target: "local" (the local catalog) or "ckan".
        ckan_url: CKAN base URL when publish_target is "ckan".
        ckan_organization: CKAN organization that owns the datasets.
        city_name: shown in dataset titles and spatial coverage.
        publisher_name: the publishing body in the catalog metadata (DCAT-AP dct:publisher).
        publisher_uri: its http(s) IRI (empty: none).
        contact_email: the datasets' contact point (DCAT-AP dcat:contactPoint).
        ckan_timeout: seconds to wait for one CKAN HTTP response (OPENCITY_CKAN_TIMEOUT).
        seed: run seed for reproducible sampling (contribution bounding).
        state_url: the portal's state DB (budget ledger + release registry): a SQLite path
            or ``sqlite:///path``, or ``postgresql://...`` (see the module docstring).
    """

    run_dir: str = field(default_factory=_default_run_dir)
    raw_dir: str = ""
    suppression_k: int = 15
    microdata_k: int = 5
    microdata_l: int = 2
    microdata_max_suppression: float = 0.05
    publish_target: str = "local"
    ckan_url: str = ""
    ckan_organization: str = "opencity"
    city_name: str = "OpenCity sample city"
    publisher_name: str = "OpenCity open data team"
    publisher_uri: str = "https://opencity.example.org/"
    contact_email: str = "opendata@opencity.example.org"
    ckan_timeout: float = 30.0
    seed: int = 20261123
    state_url: str = field(default_factory=default_state_url, repr=False)  # may hold a password

    def __post_init__(self) -> None:
        from opencity.runstore import join

        for name in ("run_dir", "raw_dir"):  # local folders absolute, URLs as they are
            value = getattr(self, name)
            if value and "://" not in value:
                object.__setattr__(self, name, os.path.abspath(os.path.expanduser(value)))
        if not self.raw_dir:
            object.__setattr__(self, "raw_dir", join(self.run_dir, "raw"))
        if not isinstance(self.suppression_k, int) or self.suppression_k < 2:
            raise ConfigError(f"suppression_k must be an integer >= 2, got {self.suppression_k!r}")
        if not isinstance(self.microdata_k, int) or self.microdata_k < 2:
            raise ConfigError(f"microdata_k must be an integer >= 2, got {self.microdata_k!r}")
        if not isinstance(self.microdata_l, int) or self.microdata_l < 1:
            raise ConfigError(f"microdata_l must be an integer >= 1, got {self.microdata_l!r}")
        if not 0 <= self.microdata_max_suppression < 1:
            raise ConfigError("microdata_max_suppression must be in [0, 1), got "
                              f"{self.microdata_max_suppression!r}")
        if not 0 < self.ckan_timeout <= 3600:
            raise ConfigError(f"ckan_timeout must be a number of seconds in (0, 3600], got "
                              f"{self.ckan_timeout!r}")
        if self.publish_target not in ("local", "ckan"):
            raise ConfigError(
                f"publish_target must be 'local' or 'ckan', got {self.publish_target!r}"
            )
        if self.publish_target == "ckan" and not self.ckan_url:
            raise ConfigError("publish_target is 'ckan' but no CKAN URL was given; set "
                              "OPENCITY_CKAN_URL or pass --ckan-url")

    @property
    def layout(self) -> RunLayout:
        return RunLayout(Path(self.run_dir))

    @classmethod
    def resolve(cls, explicit: dict[str, Any] | None = None) -> Settings:
        """Explicit values (None/'' ignored), then OPENCITY_<NAME> variables, then defaults.

        The sources are read by pydantic-settings (``_sources()``: init arguments before
        the environment, empty variables ignored); a bad value raises ConfigError naming the
        setting, never a pydantic error.
        """
        explicit = {k: v for k, v in (explicit or {}).items() if v not in (None, "")}
        unknown = set(explicit) - {f.name for f in fields(cls)}
        if unknown:
            raise ConfigError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        from pydantic import ValidationError

        try:
            resolved = _sources()(**explicit)
        except ValidationError as err:
            raise _config_error(err) from None
        return cls(**{k: v for k, v in resolved.model_dump().items() if v is not None})


def _config_error(err: Any) -> ConfigError:
    """The ConfigError a validator raised (as ValueError), else one naming the setting."""
    first = err.errors()[0]
    cause = (first.get("ctx") or {}).get("error")
    if isinstance(cause, ValueError) and str(cause).startswith("setting "):
        return ConfigError(str(cause))
    name = ".".join(str(x) for x in first.get("loc", ())) or "?"
    return ConfigError(f"setting {name} ({ENV_PREFIX}{name.upper()}): {first.get('msg')}")


_SOURCES: Any = None


def _sources() -> Any:
    """A pydantic-settings model with one optional field per Settings field (built once).

    Precedence is pydantic-settings': init arguments (the explicit values), then the
    environment ``OPENCITY_<NAME>`` (case-insensitive, empty = unset), then None, which
    leaves the dataclass default. Each field converts with ``_coerce`` (same messages)."""
    global _SOURCES
    if _SOURCES is None:
        from functools import partial
        from typing import Annotated

        from pydantic import BeforeValidator, create_model
        from pydantic_settings import BaseSettings, SettingsConfigDict

        class _Base(BaseSettings):
            model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_ignore_empty=True,
                                              extra="ignore", case_sensitive=False)

        def _convert(name: str, type_name: Any, raw: Any) -> Any:
            try:
                return None if raw is None else _coerce(name, type_name, raw)
            except ConfigError as err:
                raise ValueError(str(err)) from None

        types = {"int": int, "float": float, "str": str}  # the dataclass's (string) types
        columns: dict[str, Any] = {}
        for f in fields(Settings):
            kind = types[getattr(f.type, "__name__", str(f.type))]
            convert = BeforeValidator(partial(_convert, f.name, f.type))
            columns[f.name] = (Annotated[kind | None, convert], None)
        _SOURCES = create_model("OpenCitySettingsSources", __base__=_Base, **columns)
    return _SOURCES


def _coerce(name: str, type_name: Any, raw: Any) -> Any:
    if type_name in (int, "int"):
        try:
            value = float(raw)
        except (TypeError, ValueError):
            raise ConfigError(f"setting {name} must be an integer, got {raw!r}") from None
        if not math.isfinite(value) or value != int(value):
            raise ConfigError(f"setting {name} must be an integer, got {raw!r}")
        return int(value)
    if type_name in (float, "float"):
        try:
            value = float(raw)
        except (TypeError, ValueError):
            raise ConfigError(f"setting {name} must be a number, got {raw!r}") from None
        if not math.isfinite(value):
            raise ConfigError(f"setting {name} must be a finite number, got {raw!r}")
        return value
    return str(raw)
