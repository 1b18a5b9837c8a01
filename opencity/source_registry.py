"""The source registry: which city sources are ingested, from where, how and when.

Loaded from ``opencity/sources.yaml`` (or ``OPENCITY_SOURCES_FILE``) when a DAG file is
parsed: a local file read, no database or network. Validation names the file and the key.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from opencity.errors import ConfigError

DEFAULT_FILE = Path(__file__).with_name("sources.yaml")
_NAME = re.compile(r"^[a-z][a-z0-9_]{1,60}$")
_FIELDS = {"path", "profile", "schedule", "start_date", "description"}


@dataclass(frozen=True)
class Source:
    """One registered source (see sources.yaml for the meaning of each field)."""

    name: str
    path: str
    profile: str
    schedule: str
    start_date: date
    description: str = ""


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
        out[name] = Source(name, rel, str(cfg.get("profile", "opencity")), schedule, start,
                           str(cfg.get("description", "")))
    return out
