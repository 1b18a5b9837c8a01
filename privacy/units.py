"""Honest privacy units: bind a release's policy unit to the column of the input that
identifies it, or fail.

A person-level unit (``level: person`` in privacy/policy.yaml, e.g. ``requester``) is a person
the source must identify: the input's unit column (a pseudonym such as ``requester_pid``)
must exist and hold values. If it does not, the release fails with a message naming the
dataset, the unit and the two fixes; it never silently protects each row instead. Rows of a
source that does identify the unit but whose identifier is missing keep the documented rule
(each such row is its own unit) and are counted, so the statement can say how many.

An event-level unit (``level: event``, e.g. ``request``) needs no column: each event (its own
id) is one unit with one contribution.

Usage::

    from privacy.units import bind_unit

    binding = bind_unit(clean, dataset="opencity-311-requests-weekly",
                        unit=policy.unit("requester"), column="requester_pid")
    binding.sql("request_id")        # coalesce("requester_pid", "request_id")
    binding.statement()              # privacy_unit, privacy_unit_level, rows without id
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from opencity.errors import ConfigError

__all__ = ["UnitBinding", "bind_unit", "unit_phrase"]


def unit_phrase(unit: str, level: str) -> str:
    """How a statement names the protected unit: 'requester (person-level)',
    'request (event-level: each request on its own, not the person behind it)'."""
    if level == "event":
        return f"{unit} (event-level: each {unit} on its own, not the person behind it)"
    return f"{unit} (person-level)"


@dataclass(frozen=True)
class UnitBinding:
    """The privacy unit a release actually bounds, and where it comes from.

    Attributes:
        unit: the policy's unit name (e.g. requester, request).
        level: person or event.
        column: the input column identifying a person-level unit (None for event-level).
        rows: input rows.
        rows_without_identifier: person-level only: rows whose identifier is missing; each
            is its own unit (documented rule), counted for the statement.
    """

    unit: str
    level: str
    column: str | None
    rows: int
    rows_without_identifier: int = 0

    def sql(self, event_column: str) -> str:
        """DuckDB expression of the unit of each row: the person's identifier (a row without
        one is its own unit, ``event_column``), or the event's own id."""
        event = _q(event_column)
        if self.level == "event" or self.column is None:
            return event
        return f"coalesce({_q(self.column)}, {event})"

    def statement(self) -> dict[str, Any]:
        """The unit as a privacy statement says it (no row content, only counts)."""
        out: dict[str, Any] = {"privacy_unit": self.unit, "privacy_unit_level": self.level,
                               "privacy_unit_description": unit_phrase(self.unit, self.level)}
        if self.level == "person":
            out["rows_without_unit_identifier"] = self.rows_without_identifier
            out["rows_without_unit_identifier_rule"] = (
                f"{self.rows_without_identifier} of {self.rows} input rows carry no {self.unit} "
                f"identifier; each of them counts as its own unit (a {self.unit} behind "
                "several of them is bounded per row, not as one person)")
        else:
            out["contribution"] = f"each {self.unit} contributes once (one event, one unit)"
        return out


def bind_unit(table: pa.Table, *, dataset: str, unit: Any, column: str | None,
              supplied: Mapping[str, str] | None = None) -> UnitBinding:
    """Bind ``unit`` (a :class:`privacy.policy.UnitBudget`) to the input ``table``.

    Args:
        table: the release's input rows (only column presence and null counts are read).
        dataset: the dataset being released (named in the error).
        unit: the policy unit (name, level).
        column: the input column identifying a person of this unit (a pseudonym column).
        supplied: when the input profile declares its units (unit -> column), that mapping;
            a person-level unit absent from it is not supplied.

    Raises:
        ConfigError: a person-level unit that the input does not identify (no column, no
            values, or not declared by the profile).
    """
    name, level = str(unit.name), str(getattr(unit, "level", "person"))
    if level == "event":
        return UnitBinding(name, level, None, table.num_rows)
    reason = None
    if supplied is not None and name not in supplied:
        declared = ", ".join(sorted(supplied)) or "none"
        reason = f"its input profile declares no column for it (units it supplies: {declared})"
    elif column is None or column not in table.column_names:
        reason = f"the input has no {column or 'identifier'!s} column"
    elif table.num_rows and table.column(column).null_count == table.num_rows:
        reason = f"none of the input's {table.num_rows} rows has a value in {column}"
    if reason is not None:
        raise ConfigError(
            f"{dataset}: the release policy protects the person-level unit {name!r}, but "
            f"{reason}, so no {name} can be bounded. Either map the column that identifies a "
            f"{name} in the source's input profile (units: {{{name}: <column>}}), or, if the "
            "source cannot identify persons, declare an event-level unit in the release "
            "policy (e.g. units: {request: {level: event, period: month, epsilon: ...}}) and "
            f"set datasets.{dataset}.unit to it; the release then says it protects each "
            f"event, not each {name}")
    missing = table.column(column).null_count if table.num_rows else 0
    return UnitBinding(name, level, column, table.num_rows, int(missing))


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
