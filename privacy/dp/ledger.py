"""The privacy-budget ledger: one persistent record of every epsilon/delta spent.

Budgets are capped per dataset, per privacy unit and per period (e.g. epsilon 1 per
subscriber per day for "cdr_mobility", epsilon 2 per household per month for a KPI).
A release calls :meth:`BudgetLedger.check` before computing and :meth:`BudgetLedger.spend`
after; ``spend`` re-checks inside one write transaction (SQLite ``BEGIN IMMEDIATE``), so
concurrent processes serialize and cannot together exceed a cap. Rerunning the same
(dataset, partition, release id) returns the recorded release (and its stored artifacts)
instead of spending again.

SQLite schema (file created on first use; ``schema_version`` in ``ledger_meta``):

    ledger_meta(key TEXT PRIMARY KEY, value TEXT)
    spends(
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        dataset TEXT, privacy_unit TEXT,
        period TEXT,          -- period key: '2026-10-05' (day), '2026-W41' (week),
                              --   '2026-10' (month), '2026' (year) or 'total'
        partition TEXT,       -- the released partition, e.g. 'dt=2026-10-05'
        release_id TEXT,      -- caller's id of this release (same id = same release)
        epsilon REAL, delta REAL,
        created_at TEXT,      -- ISO-8601 UTC, audit only
        release_json TEXT,    -- the recorded release metadata (JSON object)
        UNIQUE(dataset, partition, release_id))
    artifacts(spend_id INTEGER REFERENCES spends(id), name TEXT, content BLOB,
              PRIMARY KEY(spend_id, name))   -- released tables, e.g. Parquet bytes

Production (Airflow metadata Postgres): not implemented yet. The same schema and
transaction pattern carry over with ``SELECT ... FOR UPDATE`` on a per-(dataset, unit,
period) row or ``LOCK TABLE spends IN SHARE ROW EXCLUSIVE MODE`` instead of
``BEGIN IMMEDIATE``; only the SQLite file mode exists and is tested.
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Mapping
from contextlib import closing, suppress
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from opencity.errors import ConfigError, InternalError, PipelineError, PrivacyBudgetError
from privacy.dp.params import DPBudget, _check_real

SCHEMA_VERSION = "1"
PERIODS = ("day", "week", "month", "year", "total")
# Relative slack for float sums of epsilons (10 spends of 0.1 fill a cap of 1.0 exactly).
_TOLERANCE = 1e-9

_DDL = """
CREATE TABLE IF NOT EXISTS ledger_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS spends (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    dataset TEXT NOT NULL,
    privacy_unit TEXT NOT NULL,
    period TEXT NOT NULL,
    partition TEXT NOT NULL,
    release_id TEXT NOT NULL,
    epsilon REAL NOT NULL CHECK (epsilon >= 0),
    delta REAL NOT NULL CHECK (delta >= 0),
    created_at TEXT NOT NULL,
    release_json TEXT NOT NULL,
    UNIQUE (dataset, partition, release_id)
);
CREATE INDEX IF NOT EXISTS spends_period ON spends (dataset, privacy_unit, period);
CREATE TABLE IF NOT EXISTS artifacts (
    spend_id INTEGER NOT NULL REFERENCES spends(id),
    name TEXT NOT NULL,
    content BLOB NOT NULL,
    PRIMARY KEY (spend_id, name)
);
"""


@dataclass(frozen=True)
class BudgetCap:
    """The most budget one privacy unit may spend on one dataset in one period.

    Attributes:
        epsilon: cap on the sum of epsilons per unit per period (> 0, finite).
        delta: cap on the sum of deltas per unit per period (0 <= delta < 1).
        period: "day", "week" (ISO), "month", "year" or "total".
        privacy_unit: what one unit is, e.g. "subscriber", "household", "card".
    """

    epsilon: float
    delta: float = 0.0
    period: str = "day"
    privacy_unit: str = "subscriber"

    def __post_init__(self) -> None:
        eps = _check_real("BudgetCap", "epsilon", self.epsilon)
        if eps <= 0:
            raise ConfigError(f"BudgetCap.epsilon must be > 0, got {self.epsilon!r}")
        delta = _check_real("BudgetCap", "delta", self.delta)
        if not 0 <= delta < 1:
            raise ConfigError(f"BudgetCap.delta must be in [0, 1), got {self.delta!r}")
        if self.period not in PERIODS:
            raise ConfigError(f"BudgetCap.period must be one of {PERIODS}, got {self.period!r}")
        if not isinstance(self.privacy_unit, str) or not self.privacy_unit:
            raise ConfigError("BudgetCap.privacy_unit must be a non-empty string")
        object.__setattr__(self, "epsilon", eps)
        object.__setattr__(self, "delta", delta)

    def period_key(self, when: date) -> str:
        """The period ``when`` falls in, as stored in the ledger."""
        if self.period == "day":
            return when.isoformat()
        if self.period == "week":
            iso = when.isocalendar()
            return f"{iso.year}-W{iso.week:02d}"
        if self.period == "month":
            return f"{when.year:04d}-{when.month:02d}"
        if self.period == "year":
            return f"{when.year:04d}"
        return "total"


@dataclass(frozen=True)
class LedgerEntry:
    """One recorded spend. ``newly_spent`` is False when a rerun found it already recorded."""

    id: int
    dataset: str
    privacy_unit: str
    period: str
    partition: str
    release_id: str
    epsilon: float
    delta: float
    created_at: str
    release: dict[str, Any]
    newly_spent: bool

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready view (without the release payload)."""
        return {
            "ledger_id": self.id,
            "dataset": self.dataset,
            "privacy_unit": self.privacy_unit,
            "period": self.period,
            "partition": self.partition,
            "release_id": self.release_id,
            "epsilon": self.epsilon,
            "delta": self.delta,
            "recorded_at": self.created_at,
        }


class BudgetLedger:
    """Persistent budget ledger in a SQLite file.

    Args:
        path: SQLite file (created with its directory if missing).
        caps: dataset name -> :class:`BudgetCap`. Spending on a dataset without a cap is an
            error.
        timeout: seconds to wait for another process's write transaction.
    """

    def __init__(self, path: str | Path, caps: Mapping[str, BudgetCap], *,
                 timeout: float = 60.0) -> None:
        if not isinstance(caps, Mapping) or not all(
            isinstance(c, BudgetCap) for c in caps.values()
        ):
            raise ConfigError("caps must map dataset names to BudgetCap objects")
        self.path = Path(path)
        self.caps = dict(caps)
        self.timeout = float(timeout)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with closing(self._connect()) as con:
                con.executescript(_DDL)
                con.execute(
                    "INSERT OR IGNORE INTO ledger_meta (key, value) VALUES ('schema_version', ?)",
                    (SCHEMA_VERSION,),
                )
                version = con.execute(
                    "SELECT value FROM ledger_meta WHERE key = 'schema_version'"
                ).fetchone()[0]
        except sqlite3.Error as err:
            raise ConfigError(f"cannot open the budget ledger {self.path}: {err}") from err
        if version != SCHEMA_VERSION:
            raise ConfigError(
                f"budget ledger {self.path} has schema version {version}, this OpenCity "
                f"expects {SCHEMA_VERSION}; migrate it or use another file"
            )

    # -- internals ---------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
        con.execute("PRAGMA foreign_keys = ON")
        return con

    def _cap(self, dataset: str) -> BudgetCap:
        try:
            return self.caps[dataset]
        except KeyError:
            raise ConfigError(
                f"no budget cap configured for dataset {dataset!r} (configured: "
                f"{sorted(self.caps)}); add one before releasing it"
            ) from None

    @staticmethod
    def _spent(con: sqlite3.Connection, dataset: str, unit: str, period: str) -> tuple[float,
                                                                                       float]:
        rows = con.execute(
            "SELECT epsilon, delta FROM spends WHERE dataset = ? AND privacy_unit = ? "
            "AND period = ?",
            (dataset, unit, period),
        ).fetchall()
        return math.fsum(r[0] for r in rows), math.fsum(r[1] for r in rows)

    @staticmethod
    def _entry(row: tuple, newly: bool) -> LedgerEntry:
        return LedgerEntry(
            id=row[0], dataset=row[1], privacy_unit=row[2], period=row[3], partition=row[4],
            release_id=row[5], epsilon=row[6], delta=row[7], created_at=row[8],
            release=json.loads(row[9]), newly_spent=newly,
        )

    _COLS = ("id, dataset, privacy_unit, period, partition, release_id, epsilon, delta, "
             "created_at, release_json")

    def _over(self, cap: BudgetCap, spent: tuple[float, float], cost: DPBudget) -> bool:
        return (spent[0] + cost.epsilon > cap.epsilon * (1 + _TOLERANCE)
                or spent[1] + cost.delta > cap.delta * (1 + _TOLERANCE) + 1e-300)

    def _error(self, dataset: str, cap: BudgetCap, period: str, spent: tuple[float, float],
               cost: DPBudget) -> PrivacyBudgetError:
        rem_e = max(0.0, cap.epsilon - spent[0])
        rem_d = max(0.0, cap.delta - spent[1])
        return PrivacyBudgetError(
            f"privacy budget exceeded for dataset {dataset!r}, per {cap.privacy_unit} per "
            f"{cap.period} {period}: requested epsilon={cost.epsilon:g}, delta={cost.delta:g}; "
            f"remaining epsilon={rem_e:g}, delta={rem_d:g} (cap epsilon={cap.epsilon:g}, "
            f"delta={cap.delta:g}). Lower the request or wait for the next period."
        )

    @staticmethod
    def _cost(cost: DPBudget) -> DPBudget:
        if not isinstance(cost, DPBudget):
            raise ConfigError(f"cost must be a DPBudget, got {type(cost).__name__}")
        return cost

    # -- public API --------------------------------------------------------------------
    def remaining(self, dataset: str, when: date) -> tuple[float, float]:
        """(epsilon, delta) still available per unit for ``dataset`` in the period of ``when``."""
        cap = self._cap(dataset)
        with closing(self._connect()) as con:
            e, d = self._spent(con, dataset, cap.privacy_unit, cap.period_key(when))
        return max(0.0, cap.epsilon - e), max(0.0, cap.delta - d)

    def recorded(self, dataset: str, partition: str, release_id: str) -> LedgerEntry | None:
        """The recorded spend of this release, if it was already released."""
        with closing(self._connect()) as con:
            row = con.execute(
                f"SELECT {self._COLS} FROM spends WHERE dataset = ? AND partition = ? "
                "AND release_id = ?",
                (dataset, partition, release_id),
            ).fetchone()
        return self._entry(row, False) if row else None

    def check(self, dataset: str, when: date, cost: DPBudget) -> None:
        """Raise PrivacyBudgetError if ``cost`` does not fit in what remains (no spend)."""
        cost = self._cost(cost)
        cap = self._cap(dataset)
        period = cap.period_key(when)
        with closing(self._connect()) as con:
            spent = self._spent(con, dataset, cap.privacy_unit, period)
        if self._over(cap, spent, cost):
            raise self._error(dataset, cap, period, spent, cost)

    def spend(
        self,
        dataset: str,
        when: date,
        partition: str,
        release_id: str,
        cost: DPBudget,
        release: Mapping[str, Any] | None = None,
        artifacts: Mapping[str, bytes] | None = None,
    ) -> LedgerEntry:
        """Atomically record ``cost`` for this release, or return the recorded release.

        Args:
            dataset: dataset name (must have a cap).
            when: a date in the period the spend counts against.
            partition: the released partition, e.g. ``dt=2026-10-05``.
            release_id: id of this release; the same (dataset, partition, release_id) is
                recorded once and returned on every rerun.
            cost: (epsilon, delta) per privacy unit.
            release: JSON-serializable release metadata to record.
            artifacts: released tables (name -> bytes) to keep with the entry.

        Raises:
            PrivacyBudgetError: the spend would take the period over its cap.
        """
        cost = self._cost(cost)
        cap = self._cap(dataset)
        period = cap.period_key(when)
        payload = json.dumps(dict(release or {}), sort_keys=True, default=str)
        con = self._connect()
        try:
            con.execute("BEGIN IMMEDIATE")  # one writer at a time, across processes
            row = con.execute(
                f"SELECT {self._COLS} FROM spends WHERE dataset = ? AND partition = ? "
                "AND release_id = ?",
                (dataset, partition, release_id),
            ).fetchone()
            if row:
                con.execute("COMMIT")
                return self._entry(row, False)
            spent = self._spent(con, dataset, cap.privacy_unit, period)
            if self._over(cap, spent, cost):
                con.execute("ROLLBACK")
                raise self._error(dataset, cap, period, spent, cost)
            created = datetime.now(UTC).isoformat(timespec="seconds")
            cur = con.execute(
                "INSERT INTO spends (dataset, privacy_unit, period, partition, release_id, "
                "epsilon, delta, created_at, release_json) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (dataset, cap.privacy_unit, period, partition, release_id, cost.epsilon,
                 cost.delta, created, payload),
            )
            spend_id = cur.lastrowid
            for name, content in (artifacts or {}).items():
                con.execute("INSERT INTO artifacts (spend_id, name, content) VALUES (?, ?, ?)",
                            (spend_id, name, sqlite3.Binary(content)))
            con.execute("COMMIT")
        except sqlite3.OperationalError as err:
            _rollback(con)
            raise PipelineError(
                f"budget ledger {self.path} is busy or locked ({err}); retry the run",
                transient=True,
            ) from err
        except sqlite3.Error as err:
            _rollback(con)
            raise InternalError(f"budget ledger write failed: {err}") from err
        except BaseException:
            _rollback(con)
            raise
        finally:
            con.close()
        return LedgerEntry(spend_id, dataset, cap.privacy_unit, period, partition, release_id,
                           cost.epsilon, cost.delta, created, json.loads(payload), True)

    def artifacts(self, entry_id: int) -> dict[str, bytes]:
        """The artifacts stored with a spend, by name."""
        with closing(self._connect()) as con:
            rows = con.execute(
                "SELECT name, content FROM artifacts WHERE spend_id = ? ORDER BY name",
                (entry_id,),
            ).fetchall()
        return {name: bytes(content) for name, content in rows}

    def entries(self, dataset: str | None = None) -> list[LedgerEntry]:
        """All recorded spends (optionally of one dataset), oldest first."""
        sql = f"SELECT {self._COLS} FROM spends"
        args: tuple = ()
        if dataset is not None:
            sql += " WHERE dataset = ?"
            args = (dataset,)
        with closing(self._connect()) as con:
            rows = con.execute(sql + " ORDER BY id", args).fetchall()
        return [self._entry(r, False) for r in rows]


def _rollback(con: sqlite3.Connection) -> None:
    if con.in_transaction:
        with suppress(sqlite3.Error):
            con.execute("ROLLBACK")
