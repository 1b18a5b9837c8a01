"""Small-count suppression: the interim release gate for aggregates.

A published count is kept only when at least ``threshold`` distinct people stand behind it;
otherwise the count is withheld (NULL) and flagged. The threshold comes from config
(Settings.suppression_k), never a literal at the call site.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import pyarrow as pa

from opencity.errors import ConfigError


@dataclass(frozen=True)
class SmallCountSuppression:
    """Withhold every count backed by fewer than ``threshold`` distinct units.

    Attributes:
        threshold: minimum distinct units (people) behind a published count (>= 2).
        count_columns: the columns to withhold when a row is suppressed.
        unit_column: the column holding the number of distinct units behind the row.
    """

    threshold: int
    count_columns: tuple[str, ...]
    unit_column: str

    def __post_init__(self) -> None:
        if isinstance(self.threshold, bool) or not isinstance(self.threshold, int):
            raise ConfigError(f"suppression threshold must be an integer, got {self.threshold!r}")
        if self.threshold < 2:
            raise ConfigError(f"suppression threshold must be >= 2, got {self.threshold}")
        if not self.count_columns:
            raise ConfigError("suppression needs at least one count column")


def suppress_small_counts(table: pa.Table, rule: SmallCountSuppression) -> pa.Table:
    """Return ``table`` with counts withheld (NULL) where units < threshold.

    Adds a boolean ``suppressed`` column and drops ``rule.unit_column`` (the number of people
    behind a cell is itself a count that must not be published for small cells).
    """
    missing = [c for c in (*rule.count_columns, rule.unit_column) if c not in table.column_names]
    if missing:
        raise ConfigError(f"suppression: column(s) {', '.join(missing)} not in the table")
    con = duckdb.connect()
    try:
        con.register("t", table)
        small = f'coalesce("{rule.unit_column}", 0) < {int(rule.threshold)}'
        replace = ", ".join(
            f'CASE WHEN {small} THEN NULL ELSE "{c}" END AS "{c}"' for c in rule.count_columns
        )
        return con.sql(
            f'SELECT * EXCLUDE ("{rule.unit_column}") REPLACE ({replace}), {small} AS suppressed '
            "FROM t"
        ).to_arrow_table()
    finally:
        con.close()


def secondary_suppression(table: pa.Table, *, keys: tuple[str, ...], count_columns: tuple[str, ...],
                          flag: str = "suppressed") -> pa.Table:
    """Withhold more cells so that no line of the table has exactly one withheld cell.

    A line is every row sharing the value of one key column (e.g. one district across all
    request types, one request type across all districts). With a single withheld cell in a
    line, anyone who learns the line's total (from another release) recovers the cell by
    differencing. Repeatedly, for each such line, the published cell with the smallest
    first count column is withheld too (ties broken by the key values), until no line has
    exactly one withheld cell. Pure; the composition guard (privacy.guard.withheld_cells)
    verifies the result.

    Args:
        table: output of :func:`suppress_small_counts` (``flag`` column, NULL counts).
        keys: the key columns spanning the table's lines.
        count_columns: the columns withheld together (the first one ranks candidates).
        flag: boolean column marking withheld rows.
    """
    missing = [c for c in (*keys, *count_columns, flag) if c not in table.column_names]
    if missing:
        raise ConfigError(f"secondary suppression: column(s) {', '.join(missing)} not in the "
                          "table")
    rows = table.to_pylist()
    rank = count_columns[0]
    changed = True
    while changed:
        changed = False
        for key in keys:
            lines: dict[object, list[int]] = {}
            for i, r in enumerate(rows):
                lines.setdefault(r[key], []).append(i)
            for members in lines.values():
                withheld = [i for i in members if rows[i][flag]]
                if len(withheld) != 1:
                    continue
                candidates = [i for i in members if not rows[i][flag]]
                if not candidates:
                    continue
                pick = min(candidates, key=lambda i: (rows[i][rank] if rows[i][rank] is not None
                                                      else 0, [str(rows[i][k]) for k in keys]))
                rows[pick][flag] = True
                for c in count_columns:
                    rows[pick][c] = None
                changed = True
    return pa.Table.from_pylist(rows, schema=table.schema)
