"""The privacy-loss ledger: one account per person (privacy unit, period) for the whole portal.

Every DP release of every dataset spends from the account of the people it protects, keyed
by **(privacy unit, period)** (e.g. ``("subscriber", "2026-10")``) and capped by the stored
release policy (:mod:`privacy.policy`, ``units``). A dataset also may not spend more per
cadence step (a day for a daily dataset) than its per-release budget, so a second release of
the same day under another release id cannot double the day's loss.

The release protocol lives here, behind one call, :meth:`Ledger.release`::

    ledger = Ledger(settings.state_url)                     # policy = load_policy()
    outcome = ledger.release(
        "opencity-cdr-mobility-daily", "dt=2026-10-05", date(2026, 10, 5),
        costs={"subscriber": DPBudget(1.0, 1e-7)},          # <= the policy's per-release
        compute=lambda: (release_metadata, {"a.parquet": b"..."}),
    )
    outcome.reused        # True: this release was recorded before, nothing was recomputed
    outcome.artifacts     # the released files (recorded bytes on a rerun)
    outcome.record        # LedgerRelease: spends per unit, policy hash, time

Steps: (1) *recorded*: a (dataset, partition, release id) already in the ledger is returned
with its stored artefacts (no new noise, no new spend); (2) *check* every unit's account and
the dataset's cadence budget, raising :class:`opencity.errors.PrivacyBudgetError` (naming
unit, period, requested and remaining) before anything is computed; (3) *compute*; (4)
*spend* all units atomically (all or nothing) in one serialised write transaction that
re-checks the caps; (5) return the *artefacts* to write. A concurrent run that recorded the
same release first wins: its artefacts are returned.

Backends (same schema, same SQL): SQLite (a path or ``sqlite:///path``; the embedded
default, writers serialised by ``BEGIN IMMEDIATE``) and PostgreSQL (``postgresql://...``,
psycopg 3; writers serialised by ``pg_advisory_xact_lock`` inside the write transaction).
Schema (``state_meta.schema_version`` = 2)::

    state_meta(key TEXT PRIMARY KEY, value TEXT)
    releases(id, dataset, partition, release_id, release_date, policy_hash, created_at,
             release_json, UNIQUE(dataset, partition, release_id))
    spends(release_pk -> releases.id, privacy_unit, period,    -- account: (unit, period)
           cadence_period,                                      -- e.g. '2026-10-05' (daily)
           epsilon, delta, PRIMARY KEY(release_pk, privacy_unit))
    artifacts(release_pk -> releases.id, name, content BLOB/BYTEA, PRIMARY KEY(...))

The release registry (:mod:`opencity.registry`) keeps its tables in the same database via
:class:`StateDB`.
"""

from __future__ import annotations

import json
import math
import re
import sqlite3
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from opencity.errors import ConfigError, InternalError, PipelineError, PrivacyBudgetError
from opencity.io import restricted_dir, restricted_file
from privacy.dp.params import DPBudget

SCHEMA_VERSION = "2"
# Relative slack for float sums of epsilons (10 spends of 0.1 fill a cap of 1.0 exactly).
_TOLERANCE = 1e-9
_PG_LOCK_KEY = 0x0C17_1ED6  # pg_advisory_xact_lock key of every state write
STATE_ENV = "OPENCITY_STATE_URL"


def default_state_url() -> str:
    """$OPENCITY_STATE_URL, else $XDG_DATA_HOME/opencity/state.sqlite (~/.local/share).

    One location for the CLI and the DAGs alike (opencity.settings uses it as the default of
    Settings.state_url); never inside a run directory.
    """
    import os

    env = os.environ.get(STATE_ENV)
    if env:
        return env
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return str(Path(base) / "opencity" / "state.sqlite")


def redact_url(url: str) -> str:
    """The URL without a password (for messages and logs)."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", str(url))


# -- connection layer ------------------------------------------------------------------------
class _Con:
    """One connection; SQL is written with ``?`` and translated for PostgreSQL."""

    def __init__(self, raw: Any, kind: str) -> None:
        self.raw, self.kind = raw, kind

    def execute(self, sql: str, args: tuple | list = ()) -> Any:
        if self.kind == "postgresql":
            sql = sql.replace("?", "%s")
        return self.raw.execute(sql, tuple(args))


class StateDB:
    """The portal's state database (budget ledger + release registry): SQLite or PostgreSQL.

    Args:
        url: a filesystem path or ``sqlite:///path`` (SQLite), or ``postgresql://...``.
        timeout: seconds a writer waits for another writer before failing (transient error).
    """

    def __init__(self, url: str | Path, *, timeout: float = 60.0) -> None:
        text = str(url)
        if not text:
            raise ConfigError("the state URL is empty; set OPENCITY_STATE_URL")
        self.url = text
        self.timeout = float(timeout)
        if text.startswith(("postgresql://", "postgres://")):
            self.kind = "postgresql"
            self.path: Path | None = None
        else:
            self.kind = "sqlite"
            self.path = Path(text.removeprefix("sqlite:///") if text.startswith("sqlite:///")
                             else text.removeprefix("sqlite://"))
        self._ready: set[str] = set()
        self._secured: set[str] = set()

    def __repr__(self) -> str:
        return f"StateDB({redact_url(self.url)!r})"

    @property
    def where(self) -> str:
        return str(self.path) if self.path is not None else redact_url(self.url)

    # DDL with per-backend types
    def ddl(self, text: str) -> list[str]:
        if self.kind == "postgresql":
            text = (text.replace("{id}", "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY")
                    .replace("{blob}", "BYTEA"))
        else:
            text = text.replace("{id}", "INTEGER PRIMARY KEY AUTOINCREMENT").replace(
                "{blob}", "BLOB")
        return [s.strip() for s in text.split(";") if s.strip()]

    def _raw_connect(self) -> Any:
        if self.kind == "sqlite":
            assert self.path is not None
            if not self.path.parent.exists():  # new folders owner-only; never chmod a given one
                restricted_dir(self.path.parent)
            con = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
            if self.path.name not in self._secured:
                # The ledger and registry are restricted state: owner-only whatever the umask
                # (SQLite gives its -journal/-wal files the database file's mode).
                restricted_file(self.path)
                self._secured.add(self.path.name)
            con.execute("PRAGMA foreign_keys = ON")
            return con
        try:
            import psycopg
        except ImportError as err:  # pragma: no cover - pinned dependency
            raise ConfigError("a postgresql:// state URL needs psycopg (pip install "
                              "'psycopg[binary]')") from err
        try:
            return psycopg.connect(self.url, autocommit=True,
                                   connect_timeout=max(1, int(self.timeout)))
        except psycopg.Error as err:
            raise PipelineError(
                f"cannot connect to the state database {redact_url(self.url)}: "
                f"{type(err).__name__}; check that it runs and OPENCITY_STATE_URL",
                transient=True) from None

    def _errors(self) -> tuple[type[BaseException], ...]:
        if self.kind == "sqlite":
            return (sqlite3.Error,)
        import psycopg
        return (psycopg.Error,)

    @contextmanager
    def read(self) -> Iterator[_Con]:
        """A connection for reads (autocommit)."""
        raw = self._raw_connect()
        try:
            yield _Con(raw, self.kind)
        except self._errors() as err:
            raise PipelineError(f"reading the state database {self.where} failed: {err}",
                                transient=True) from err
        finally:
            raw.close()

    @contextmanager
    def write(self) -> Iterator[_Con]:
        """One serialised write transaction (all or nothing; one writer at a time)."""
        raw = self._raw_connect()
        con = _Con(raw, self.kind)
        try:
            if self.kind == "sqlite":
                raw.execute("BEGIN IMMEDIATE")  # one writer at a time, across processes
            else:
                raw.execute("BEGIN")
                raw.execute(f"SET LOCAL lock_timeout = '{int(self.timeout * 1000)}ms'")
                raw.execute("SELECT pg_advisory_xact_lock(%s)", (_PG_LOCK_KEY,))
            yield con
            raw.execute("COMMIT")
        except self._errors() as err:
            _rollback(raw)
            if _transient(err):
                raise PipelineError(f"the state database {self.where} is busy or locked "
                                    f"({err}); retry the run", transient=True) from err
            raise InternalError(f"state database write failed ({self.where}): {err}") from err
        except BaseException:
            _rollback(raw)
            raise
        finally:
            raw.close()

    def table_exists(self, con: _Con, table: str) -> bool:
        if self.kind == "sqlite":
            return con.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                               (table,)).fetchone() is not None
        return con.execute("SELECT to_regclass(?)", (table,)).fetchone()[0] is not None

    def ensure(self, name: str, version: str, ddl: str) -> None:
        """Create the tables of ``name`` (e.g. 'ledger', 'registry') once, check the version."""
        if name in self._ready:
            return
        key = f"schema_version:{name}"
        try:
            with self.write() as con:
                if self.table_exists(con, "ledger_meta"):
                    raise ConfigError(
                        f"{self.where} is a budget ledger of the old per-dataset format "
                        "(schema 1, one cap per dataset); it cannot be read as the portal's "
                        "per-person ledger. Point OPENCITY_STATE_URL (or --ledger) at a new "
                        "state database")
                con.execute("CREATE TABLE IF NOT EXISTS state_meta "
                            "(key TEXT PRIMARY KEY, value TEXT NOT NULL)")
                for stmt in self.ddl(ddl):
                    con.execute(stmt)
                row = con.execute("SELECT value FROM state_meta WHERE key = ?",
                                  (key,)).fetchone()
                if row is None:
                    con.execute("INSERT INTO state_meta (key, value) VALUES (?, ?)",
                                (key, version))
                    found = version
                else:
                    found = row[0]
        except InternalError as err:
            raise ConfigError(f"cannot open the state database {self.where}: {err}") from err
        if found != version:
            raise ConfigError(f"state database {self.where} has {name} schema version {found}, "
                              f"this OpenCity expects {version}; migrate it or use another "
                              "OPENCITY_STATE_URL")
        self._ready.add(name)


def _transient(err: BaseException) -> bool:
    if isinstance(err, sqlite3.OperationalError):
        return True
    name = type(err).__name__
    return name in ("OperationalError", "LockNotAvailable", "SerializationFailure",
                    "DeadlockDetected", "QueryCanceled")


def _rollback(raw: Any) -> None:
    with suppress(Exception):
        raw.execute("ROLLBACK")


# -- ledger ----------------------------------------------------------------------------------
_DDL = """
CREATE TABLE IF NOT EXISTS releases (
    id {id},
    dataset TEXT NOT NULL,
    partition TEXT NOT NULL,
    release_id TEXT NOT NULL,
    release_date TEXT NOT NULL,
    policy_hash TEXT NOT NULL,
    created_at TEXT NOT NULL,
    release_json TEXT NOT NULL,
    UNIQUE (dataset, partition, release_id)
);
CREATE TABLE IF NOT EXISTS spends (
    release_pk BIGINT NOT NULL REFERENCES releases(id),
    privacy_unit TEXT NOT NULL,
    period TEXT NOT NULL,
    cadence_period TEXT NOT NULL,
    epsilon DOUBLE PRECISION NOT NULL CHECK (epsilon >= 0),
    delta DOUBLE PRECISION NOT NULL CHECK (delta >= 0),
    PRIMARY KEY (release_pk, privacy_unit)
);
CREATE INDEX IF NOT EXISTS spends_account ON spends (privacy_unit, period);
CREATE TABLE IF NOT EXISTS artifacts (
    release_pk BIGINT NOT NULL REFERENCES releases(id),
    name TEXT NOT NULL,
    content {blob} NOT NULL,
    PRIMARY KEY (release_pk, name)
)
"""


@dataclass(frozen=True)
class Spend:
    """What one release spent from one account (privacy unit, period)."""

    unit: str
    period: str
    epsilon: float
    delta: float


@dataclass(frozen=True)
class LedgerRelease:
    """One recorded release and its spends. ``newly_spent`` is False when it was found
    already recorded (a rerun)."""

    id: int
    dataset: str
    partition: str
    release_id: str
    release_date: str
    policy_hash: str
    created_at: str
    release: dict[str, Any]
    spends: tuple[Spend, ...]
    newly_spent: bool = False

    def spend_for(self, unit: str | None = None) -> Spend:
        """The spend of ``unit`` (or of the only unit)."""
        if unit is None:
            if len(self.spends) != 1:
                raise ConfigError(f"release {self.dataset} {self.partition} spent from "
                                  f"{len(self.spends)} units; name one")
            return self.spends[0]
        for s in self.spends:
            if s.unit == unit:
                return s
        raise ConfigError(f"release {self.dataset} {self.partition} spent nothing for {unit!r}")

    @property
    def epsilon(self) -> float:
        """Epsilon of a single-unit release."""
        return self.spend_for().epsilon

    @property
    def delta(self) -> float:
        return self.spend_for().delta

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready view (without the release payload)."""
        out: dict[str, Any] = {
            "ledger_id": self.id, "dataset": self.dataset, "partition": self.partition,
            "release_id": self.release_id, "policy_hash": self.policy_hash,
            "recorded_at": self.created_at,
            "spends": [{"privacy_unit": s.unit, "period": s.period, "epsilon": s.epsilon,
                        "delta": s.delta} for s in self.spends],
        }
        if len(self.spends) == 1:
            s = self.spends[0]
            out.update(privacy_unit=s.unit, period=s.period, epsilon=s.epsilon, delta=s.delta)
        return out


@dataclass(frozen=True)
class ReleaseOutcome:
    """What :meth:`Ledger.release` did: ``reused`` when the ledger already held it."""

    record: LedgerRelease
    artifacts: dict[str, bytes] = field(default_factory=dict)
    reused: bool = False


class Ledger:
    """The per-person privacy-loss ledger in the state database.

    Args:
        url: state URL (SQLite path / ``sqlite:///`` / ``postgresql://``) or a StateDB.
        policy: the release policy (default :func:`privacy.policy.load_policy`).
        timeout: seconds to wait for another writer.
    """

    def __init__(self, url: str | Path | StateDB, policy: Any = None, *,
                 timeout: float = 60.0) -> None:
        from privacy.policy import load_policy

        self.db = url if isinstance(url, StateDB) else StateDB(url, timeout=timeout)
        self.policy = policy if policy is not None else load_policy()
        self.db.ensure("ledger", SCHEMA_VERSION, _DDL)
        from privacy.dp import chain

        chain.ensure(self.db)

    def __repr__(self) -> str:
        return f"Ledger({self.db.where!r})"

    def _check_approval(self, dataset: str) -> None:
        """Nothing is computed or spent under a policy version looser than the privacy
        officer approved (:meth:`privacy.approval.ApprovalStore.check_compute`)."""
        from privacy.approval import ApprovalStore

        ApprovalStore(self.db).check_compute(self.policy, dataset)

    # -- costs against the policy ---------------------------------------------------------
    def _costs(self, dataset: str, costs: Mapping[str, DPBudget]) -> dict[str, DPBudget]:
        ds = self.policy.dataset(dataset)
        if ds.method != "differential_privacy":
            raise ConfigError(f"dataset {dataset!r} is released with {ds.method} in the "
                              "policy; only differentially private releases spend budget")
        if not isinstance(costs, Mapping) or not costs:
            raise ConfigError(f"costs of {dataset!r} must map privacy units to DPBudget")
        out = {}
        for unit, cost in costs.items():
            if not isinstance(cost, DPBudget):
                raise ConfigError(f"cost of {dataset!r} for {unit!r} must be a DPBudget, got "
                                  f"{type(cost).__name__}")
            if unit not in ds.spend:
                raise ConfigError(f"dataset {dataset!r} does not spend from unit {unit!r} in "
                                  f"the policy (units: {', '.join(ds.units)})")
            allowed = ds.spend[unit]
            if (cost.epsilon > allowed.epsilon * (1 + _TOLERANCE)
                    or cost.delta > allowed.delta * (1 + _TOLERANCE)):
                raise ConfigError(
                    f"datasets.{dataset}: a release may spend at most epsilon="
                    f"{allowed.epsilon:g}, delta={allowed.delta:g} per {unit} (policy "
                    f"{self.policy.path}); requested epsilon={cost.epsilon:g}, "
                    f"delta={cost.delta:g}. A caller may only tighten the policy")
            out[unit] = cost
        return dict(sorted(out.items()))

    @staticmethod
    def _sum(rows: list) -> tuple[float, float]:
        return math.fsum(r[0] for r in rows), math.fsum(r[1] for r in rows)

    def _account(self, con: _Con, unit: str, period: str) -> tuple[float, float]:
        return self._sum(con.execute(
            "SELECT epsilon, delta FROM spends WHERE privacy_unit = ? AND period = ?",
            (unit, period)).fetchall())

    def _cadence(self, con: _Con, dataset: str, unit: str, cadence_period: str
                 ) -> tuple[float, float]:
        return self._sum(con.execute(
            "SELECT s.epsilon, s.delta FROM spends s JOIN releases r ON r.id = s.release_pk "
            "WHERE r.dataset = ? AND s.privacy_unit = ? AND s.cadence_period = ?",
            (dataset, unit, cadence_period)).fetchall())

    @staticmethod
    def _over(cap: tuple[float, float], spent: tuple[float, float], cost: DPBudget) -> bool:
        return (spent[0] + cost.epsilon > cap[0] * (1 + _TOLERANCE)
                or spent[1] + cost.delta > cap[1] * (1 + _TOLERANCE) + 1e-300)

    def _check(self, con: _Con, dataset: str, when: date, costs: dict[str, DPBudget]) -> None:
        ds = self.policy.dataset(dataset)
        from privacy.policy import period_key

        for unit, cost in costs.items():
            ub = self.policy.unit(unit)
            period = ub.period_key(when)
            spent = self._account(con, unit, period)
            if self._over((ub.epsilon, ub.delta), spent, cost):
                raise PrivacyBudgetError(
                    f"privacy budget exceeded for privacy unit {unit!r}, period {period} "
                    f"(per {unit} per {ub.period}, across every dataset of the portal): "
                    f"{dataset} requested epsilon={cost.epsilon:g}, delta={cost.delta:g}; "
                    f"remaining epsilon={max(0.0, ub.epsilon - spent[0]):g}, "
                    f"delta={max(0.0, ub.delta - spent[1]):g} (cap epsilon={ub.epsilon:g}, "
                    f"delta={ub.delta:g}). Nothing was released or spent; wait for the next "
                    "period or release less.")
            cperiod = period_key(ds.cadence_period, when)
            allowed = ds.spend[unit]
            dspent = self._cadence(con, dataset, unit, cperiod)
            if self._over((allowed.epsilon, allowed.delta), dspent, cost):
                raise PrivacyBudgetError(
                    f"privacy budget exceeded for privacy unit {unit!r}, period {cperiod}: "
                    f"{dataset} is released {ds.cadence} with at most epsilon="
                    f"{allowed.epsilon:g}, delta={allowed.delta:g} per {unit} per "
                    f"{ds.cadence_period}; requested epsilon={cost.epsilon:g}, "
                    f"delta={cost.delta:g}; remaining epsilon="
                    f"{max(0.0, allowed.epsilon - dspent[0]):g}, delta="
                    f"{max(0.0, allowed.delta - dspent[1]):g}. Nothing was released or spent.")

    # -- reads ------------------------------------------------------------------------------
    _COLS = ("id, dataset, partition, release_id, release_date, policy_hash, created_at, "
             "release_json")

    def _load(self, con: _Con, rows: list, newly: bool = False) -> list[LedgerRelease]:
        out = []
        for row in rows:
            spends = tuple(Spend(u, p, float(e), float(d)) for u, p, e, d in con.execute(
                "SELECT privacy_unit, period, epsilon, delta FROM spends WHERE release_pk = ? "
                "ORDER BY privacy_unit", (row[0],)).fetchall())
            out.append(LedgerRelease(int(row[0]), row[1], row[2], row[3], row[4], row[5],
                                     row[6], json.loads(row[7]), spends, newly))
        return out

    def _recorded(self, con: _Con, dataset: str, partition: str, release_id: str
                  ) -> LedgerRelease | None:
        rows = con.execute(f"SELECT {self._COLS} FROM releases WHERE dataset = ? AND "
                           "partition = ? AND release_id = ?",
                           (dataset, partition, release_id)).fetchall()
        return self._load(con, rows)[0] if rows else None

    def recorded(self, dataset: str, partition: str, release_id: str) -> LedgerRelease | None:
        """The recorded release (dataset, partition, release id), if any."""
        with self.db.read() as con:
            return self._recorded(con, dataset, partition, release_id)

    def recorded_spend(self, dataset: str, partition: str, release_id: str | None = None,
                       unit: str | None = None) -> tuple[float, float] | None:
        """(epsilon, delta) the ledger recorded for a partition (optionally one release id
        and one unit), summed; None if nothing. This is what the release gate reads."""
        sql = ("SELECT s.epsilon, s.delta FROM spends s JOIN releases r ON r.id = s.release_pk "
               "WHERE r.dataset = ? AND r.partition = ?")
        args: list[Any] = [dataset, partition]
        if release_id is not None:
            sql += " AND r.release_id = ?"
            args.append(release_id)
        if unit is not None:
            sql += " AND s.privacy_unit = ?"
            args.append(unit)
        with self.db.read() as con:
            rows = con.execute(sql, args).fetchall()
        return self._sum(rows) if rows else None

    def spent(self, unit: str, when: date) -> tuple[float, float]:
        """(epsilon, delta) spent from ``unit``'s account in the period of ``when``."""
        period = self.policy.unit(unit).period_key(when)
        with self.db.read() as con:
            return self._account(con, unit, period)

    def remaining(self, unit: str, when: date) -> tuple[float, float]:
        """(epsilon, delta) left in ``unit``'s account for the period of ``when``."""
        ub = self.policy.unit(unit)
        e, d = self.spent(unit, when)
        return max(0.0, ub.epsilon - e), max(0.0, ub.delta - d)

    def check(self, dataset: str, when: date, costs: Mapping[str, DPBudget]) -> None:
        """Raise PrivacyBudgetError if ``costs`` do not fit (nothing is spent)."""
        costs = self._costs(dataset, costs)
        with self.db.read() as con:
            self._check(con, dataset, when, costs)

    def releases(self, dataset: str | None = None) -> list[LedgerRelease]:
        """Every recorded release (optionally of one dataset), oldest first."""
        sql, args = f"SELECT {self._COLS} FROM releases", ()
        if dataset is not None:
            sql, args = sql + " WHERE dataset = ?", (dataset,)
        with self.db.read() as con:
            return self._load(con, con.execute(sql + " ORDER BY id", args).fetchall())

    def artifacts(self, release_pk: int) -> dict[str, bytes]:
        """The artefacts stored with a release, by name."""
        with self.db.read() as con:
            rows = con.execute("SELECT name, content FROM artifacts WHERE release_pk = ? "
                               "ORDER BY name", (release_pk,)).fetchall()
        return {name: bytes(content) for name, content in rows}

    def accounts(self) -> list[dict[str, Any]]:
        """Every (unit, period) account with its spends, caps and releases (`opencity budget`).

        Returns:
            list of {unit, period, spent_epsilon, spent_delta, cap_epsilon, cap_delta,
            releases: [{dataset, partition, release_id, epsilon, delta}]}, ordered by unit
            (policy order) and period.
        """
        with self.db.read() as con:
            rows = con.execute(
                "SELECT s.privacy_unit, s.period, r.dataset, r.partition, r.release_id, "
                "s.epsilon, s.delta FROM spends s JOIN releases r ON r.id = s.release_pk "
                "ORDER BY r.id").fetchall()
        groups: dict[tuple[str, str], list] = {}
        for unit, period, ds, part, rid, eps, delta in rows:
            groups.setdefault((unit, period), []).append(
                {"dataset": ds, "partition": part, "release_id": rid, "epsilon": float(eps),
                 "delta": float(delta)})
        order = list(self.policy.units)
        out = []
        for (unit, period), rel in sorted(groups.items(), key=lambda kv: (
                order.index(kv[0][0]) if kv[0][0] in order else len(order), kv[0])):
            ub = self.policy.units.get(unit)
            out.append({
                "unit": unit, "period": period,
                "spent_epsilon": math.fsum(r["epsilon"] for r in rel),
                "spent_delta": math.fsum(r["delta"] for r in rel),
                "cap_epsilon": ub.epsilon if ub else None,
                "cap_delta": ub.delta if ub else None,
                "releases": rel,
            })
        return out

    # -- writes -----------------------------------------------------------------------------
    def spend(self, dataset: str, partition: str, release_id: str, when: date,
              costs: Mapping[str, DPBudget], release: Mapping[str, Any] | None = None,
              artifacts: Mapping[str, bytes] | None = None) -> LedgerRelease:
        """Atomically record ``costs`` (every unit, all or nothing), or return the recorded
        release when (dataset, partition, release id) is already in the ledger.

        Raises:
            PrivacyBudgetError: a unit's account or the dataset's cadence budget would go
                over its cap (nothing is recorded for any unit).
            ConfigError: costs not allowed by the policy.
        """
        costs = self._costs(dataset, costs)
        self._check_approval(dataset)
        ds = self.policy.dataset(dataset)
        from privacy.policy import period_key

        payload = json.dumps(dict(release or {}), sort_keys=True, default=str)
        created = datetime.now(UTC).isoformat(timespec="seconds")
        with self.db.write() as con:
            found = self._recorded(con, dataset, partition, release_id)
            if found is not None:
                return found
            self._check(con, dataset, when, costs)
            row = con.execute(
                "INSERT INTO releases (dataset, partition, release_id, release_date, "
                "policy_hash, created_at, release_json) VALUES (?, ?, ?, ?, ?, ?, ?) "
                "RETURNING id",
                (dataset, partition, release_id, when.isoformat(), self.policy.hash, created,
                 payload)).fetchone()
            pk = int(row[0])
            spends = []
            for unit, cost in costs.items():
                period = self.policy.unit(unit).period_key(when)
                con.execute(
                    "INSERT INTO spends (release_pk, privacy_unit, period, cadence_period, "
                    "epsilon, delta) VALUES (?, ?, ?, ?, ?, ?)",
                    (pk, unit, period, period_key(ds.cadence_period, when), cost.epsilon,
                     cost.delta))
                spends.append(Spend(unit, period, cost.epsilon, cost.delta))
            for name, content in (artifacts or {}).items():
                con.execute("INSERT INTO artifacts (release_pk, name, content) VALUES (?, ?, ?)",
                            (pk, name, bytes(content)))
            from privacy.dp import chain

            # the spend's witness in the tamper-evident chain, in the same transaction
            chain.append(con, "spend", dataset, partition, {
                "release_id": release_id, "policy_hash": self.policy.hash,
                "spends": [{"unit": sp.unit, "period": sp.period, "epsilon": sp.epsilon,
                            "delta": sp.delta} for sp in spends]})
        return LedgerRelease(pk, dataset, partition, release_id, when.isoformat(),
                             self.policy.hash, created, json.loads(payload), tuple(spends), True)

    def release(self, dataset: str, partition: str, when: date,
                costs: Mapping[str, DPBudget],
                compute: Callable[[], tuple[Mapping[str, Any], Mapping[str, bytes]]],
                *, release_id: str = "default") -> ReleaseOutcome:
        """The release protocol: recorded -> check -> compute -> spend -> artefacts.

        Args:
            dataset: policy dataset name (must be a DP dataset).
            partition: e.g. ``dt=2026-10-05``.
            when: a date in the period the spends count against (the partition's start).
            costs: privacy unit -> DPBudget per person (each <= the policy's per-release).
            compute: called only if the release is new and fits; returns (release metadata,
                artefacts name -> bytes). Metadata is recorded; artefacts are stored and
                returned byte for byte on every rerun.
            release_id: the same (dataset, partition, release id) is one release.

        Raises:
            PrivacyBudgetError: over a cap (before computing; nothing spent).
        """
        self._check_approval(dataset)
        found = self.recorded(dataset, partition, release_id)
        if found is not None:
            return ReleaseOutcome(found, self.artifacts(found.id), reused=True)
        self.check(dataset, when, costs)
        metadata, artifacts = compute()
        record = self.spend(dataset, partition, release_id, when, costs, metadata, artifacts)
        if not record.newly_spent:  # a concurrent run recorded it first: use that one
            return ReleaseOutcome(record, self.artifacts(record.id), reused=True)
        return ReleaseOutcome(record, dict(artifacts), reused=False)
