"""The source registry: which city sources are ingested, from where, how and when.

Loaded from ``opencity/sources.yaml`` (or ``OPENCITY_SOURCES_FILE``; ``opencity run --config
DIR`` sets it to ``DIR/sources.yaml``) when a DAG file is parsed: a local file read, no
database or network. Validation names the file and the key. It is the one list of sources:
the ingestion DAGs, opencity_311, cdr_mobility and opencity_kpi take raw paths, profiles and
start dates from it (``for_source``).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

from opencity.errors import ConfigError

DEFAULT_FILE = Path(__file__).with_name("sources.yaml")
_NAME = re.compile(r"^[a-z][a-z0-9_]{1,60}$")
_FIELDS = {"path", "profile", "schedule", "start_date", "description", "source", "dag"}
#: DAGs that ingest a source themselves (``dag:``); other entries get ``ingest_<name>``.
CONSUMER_DAGS = ("opencity_311", "cdr_mobility", "opencity_kpi")


@dataclass(frozen=True)
class Source:
    """One registered source (see sources.yaml for the meaning of each field)."""

    name: str
    path: str
    profile: str
    schedule: str
    start_date: date
    description: str = ""
    source: str = ""  # canonical source (transforms.schemas); default: the entry's name
    dag: str = ""  # the DAG that ingests it; "" = its own ingest_<name> DAG
    registry: str = ""  # the sources.yaml it came from

    @property
    def kind(self) -> str:
        """The canonical source name (a schema of transforms.schemas)."""
        return self.source or self.name


def load_sources(path: str | Path | None = None) -> dict[str, Source]:
    """Parse and validate the registry; raises ConfigError naming the file and key."""
    import yaml

    file = Path(path or os.environ.get("OPENCITY_SOURCES_FILE") or DEFAULT_FILE)
    try:
        doc = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"cannot read the source registry {file}: {err}") from err
    entries = doc.get("sources") if isinstance(doc, dict) else None
    if not isinstance(entries, dict) or not entries:
        raise ConfigError(f"{file}: expected a non-empty 'sources:' mapping")
    out: dict[str, Source] = {}
    for name, cfg in entries.items():
        where = f"{file}: sources.{name}"
        if not isinstance(name, str) or not _NAME.match(name):
            raise ConfigError(f"{where}: a source name is lowercase letters, digits and '_'")
        if not isinstance(cfg, dict):
            raise ConfigError(f"{where}: expected a mapping of {sorted(_FIELDS)}")
        unknown = set(cfg) - _FIELDS
        missing = {"path", "schedule", "start_date"} - set(cfg)
        if unknown or missing:
            raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}, missing "
                              f"{sorted(missing)}; keys are {sorted(_FIELDS)}")
        rel = str(cfg["path"])
        if rel.startswith("/") or ".." in Path(rel).parts:
            raise ConfigError(f"{where}.path must be relative to the raw landing area: {rel!r}")
        try:
            start = date.fromisoformat(str(cfg["start_date"]))
        except ValueError:
            raise ConfigError(f"{where}.start_date must be YYYY-MM-DD, got "
                              f"{cfg['start_date']!r}") from None
        schedule = str(cfg["schedule"])
        if len(schedule.split()) != 5:
            raise ConfigError(f"{where}.schedule must be a 5-field cron, got {schedule!r}")
        dag = str(cfg.get("dag", ""))
        if dag and dag not in CONSUMER_DAGS:
            raise ConfigError(f"{where}.dag must be one of {', '.join(CONSUMER_DAGS)} (or "
                              f"absent: its own ingest_{name} DAG), got {dag!r}")
        out[name] = Source(name, rel, _profile(file, where, cfg.get("profile", "opencity")),
                           schedule, start, str(cfg.get("description", "")),
                           str(cfg.get("source", "")), dag, str(file))
    return out


def _profile(file: Path, where: str, value) -> str:
    """A shipped profile name as is; a path made absolute against the registry's folder."""
    text = str(value)
    if not (text.endswith((".yaml", ".yml")) or "/" in text):
        return text
    path = Path(text)
    if not path.is_absolute():
        path = (file.parent / path).resolve()
    if not path.is_file():
        raise ConfigError(f"{where}.profile: no profile file {path} (a path is relative to "
                          f"the folder of {file.name})")
    return str(path)


def for_source(kind: str, path: str | Path | None = None) -> Source | None:
    """The registry entry of canonical source ``kind`` (by name, else by ``source:``)."""
    sources = load_sources(path)
    if kind in sources and sources[kind].kind == kind:
        return sources[kind]
    return next((s for s in sources.values() if s.kind == kind), None)


def require_source(kind: str, path: str | Path | None = None) -> Source:
    """``for_source`` or a ConfigError saying which registry lacks it."""
    src = for_source(kind, path)
    if src is None:
        file = Path(path or os.environ.get("OPENCITY_SOURCES_FILE") or DEFAULT_FILE)
        raise ConfigError(f"the source registry {file} has no {kind!r} source; add an entry "
                          f"(path, profile, schedule, start_date) for it")
    return src


def start_of(kind: str | None = None, *, month: bool = False) -> datetime | None:
    """Start date (UTC midnight) of the registry's ``kind`` source, or of the earliest source
    when ``kind`` is None; ``month``: the first day of that month. None: no such source."""
    if kind is None:
        sources = list(load_sources().values())
        first = min((s.start_date for s in sources), default=None)
    else:
        src = for_source(kind)
        first = src.start_date if src else None
    if first is None:
        return None
    if month:
        first = first.replace(day=1)
    return datetime(first.year, first.month, first.day, tzinfo=UTC)
