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

Backends: SQLite (a path or ``sqlite:///path``; the embedded default) and PostgreSQL
(``postgresql://...``, psycopg 3), through :class:`privacy.dp.db.StateDB` (SQLAlchemy Core;
the tables are defined there, writers serialised there). Tables::

    releases(id, dataset, partition, release_id, release_date, policy_hash, created_at,
             release_json, UNIQUE(dataset, partition, release_id))
    spends(release_pk -> releases.id, privacy_unit, period,    -- account: (unit, period)
           cadence_period,                                      -- e.g. '2026-10-05' (daily)
           epsilon, delta, PRIMARY KEY(release_pk, privacy_unit))
    artifacts(release_pk -> releases.id, name, content BLOB/BYTEA, PRIMARY KEY(...))

The release registry (:mod:`opencity.registry`) keeps its tables in the same database
(:mod:`privacy.dp.db`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Connection

from opencity.errors import ConfigError, PrivacyBudgetError
from privacy.dp.db import STATE_ENV, StateDB, default_state_url, redact_url
from privacy.dp.db import artifacts as t_artifacts
from privacy.dp.db import releases as t_releases
from privacy.dp.db import spends as t_spends
from privacy.dp.params import DPBudget

__all__ = ["STATE_ENV", "Ledger", "LedgerRelease", "ReleaseOutcome", "Spend", "StateDB",
           "default_state_url", "redact_url"]

SCHEMA_VERSION = "2"  # the ledger tables' version (state_meta schema_version:ledger)
# Relative slack for float sums of epsilons (10 spends of 0.1 fill a cap of 1.0 exactly).
_TOLERANCE = 1e-9


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
        self.db.ensure()

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

    def _account(self, con: Connection, unit: str, period: str) -> tuple[float, float]:
        s = t_spends.c
        return self._sum(con.execute(select(s.epsilon, s.delta).where(
            s.privacy_unit == unit, s.period == period)).all())

    def _cadence(self, con: Connection, dataset: str, unit: str, cadence_period: str
                 ) -> tuple[float, float]:
        s, r = t_spends.c, t_releases.c
        return self._sum(con.execute(
            select(s.epsilon, s.delta).join_from(t_spends, t_releases, r.id == s.release_pk)
            .where(r.dataset == dataset, s.privacy_unit == unit,
                   s.cadence_period == cadence_period)).all())

    @staticmethod
    def _over(cap: tuple[float, float], spent: tuple[float, float], cost: DPBudget) -> bool:
        return (spent[0] + cost.epsilon > cap[0] * (1 + _TOLERANCE)
                or spent[1] + cost.delta > cap[1] * (1 + _TOLERANCE) + 1e-300)

    def _check(self, con: Connection, dataset: str, when: date, costs: dict[str, DPBudget]) -> None:
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
    _COLS = (t_releases.c.id, t_releases.c.dataset, t_releases.c.partition,
             t_releases.c.release_id, t_releases.c.release_date, t_releases.c.policy_hash,
             t_releases.c.created_at, t_releases.c.release_json)

    def _load(self, con: Connection, rows: list, newly: bool = False) -> list[LedgerRelease]:
        out = []
        for row in rows:
            s = t_spends.c
            spends = tuple(Spend(u, p, float(e), float(d)) for u, p, e, d in con.execute(
                select(s.privacy_unit, s.period, s.epsilon, s.delta)
                .where(s.release_pk == row[0]).order_by(s.privacy_unit)).all())
            out.append(LedgerRelease(int(row[0]), row[1], row[2], row[3], row[4], row[5],
                                     row[6], json.loads(row[7]), spends, newly))
        return out

    def _recorded(self, con: Connection, dataset: str, partition: str, release_id: str
                  ) -> LedgerRelease | None:
        r = t_releases.c
        rows = con.execute(select(*self._COLS).where(
            r.dataset == dataset, r.partition == partition, r.release_id == release_id)).all()
        return self._load(con, rows)[0] if rows else None

    def recorded(self, dataset: str, partition: str, release_id: str) -> LedgerRelease | None:
        """The recorded release (dataset, partition, release id), if any."""
        with self.db.read() as con:
            return self._recorded(con, dataset, partition, release_id)

    def recorded_spend(self, dataset: str, partition: str, release_id: str | None = None,
                       unit: str | None = None) -> tuple[float, float] | None:
        """(epsilon, delta) the ledger recorded for a partition (optionally one release id
        and one unit), summed; None if nothing. This is what the release gate reads."""
        s, r = t_spends.c, t_releases.c
        query = (select(s.epsilon, s.delta).join_from(t_spends, t_releases, r.id == s.release_pk)
                 .where(r.dataset == dataset, r.partition == partition))
        if release_id is not None:
            query = query.where(r.release_id == release_id)
        if unit is not None:
            query = query.where(s.privacy_unit == unit)
        with self.db.read() as con:
            rows = con.execute(query).all()
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
        query = select(*self._COLS).order_by(t_releases.c.id)
        if dataset is not None:
            query = query.where(t_releases.c.dataset == dataset)
        with self.db.read() as con:
            return self._load(con, con.execute(query).all())

    def artifacts(self, release_pk: int) -> dict[str, bytes]:
        """The artefacts stored with a release, by name."""
        with self.db.read() as con:
            a = t_artifacts.c
            rows = con.execute(select(a.name, a.content).where(a.release_pk == release_pk)
                               .order_by(a.name)).all()
        return {name: bytes(content) for name, content in rows}

    def accounts(self) -> list[dict[str, Any]]:
        """Every (unit, period) account with its spends, caps and releases (`opencity budget`).

        Returns:
            list of {unit, period, spent_epsilon, spent_delta, cap_epsilon, cap_delta,
            releases: [{dataset, partition, release_id, epsilon, delta}]}, ordered by unit
            (policy order) and period.
        """
        with self.db.read() as con:
            s, r = t_spends.c, t_releases.c
            rows = con.execute(
                select(s.privacy_unit, s.period, r.dataset, r.partition, r.release_id,
                       s.epsilon, s.delta).join_from(t_spends, t_releases, r.id == s.release_pk)
                .order_by(r.id)).all()
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
            pk = int(con.execute(t_releases.insert().values(
                dataset=dataset, partition=partition, release_id=release_id,
                release_date=when.isoformat(), policy_hash=self.policy.hash, created_at=created,
                release_json=payload).returning(t_releases.c.id)).scalar_one())
            spends = []
            for unit, cost in costs.items():
                period = self.policy.unit(unit).period_key(when)
                con.execute(t_spends.insert().values(
                    release_pk=pk, privacy_unit=unit, period=period,
                    cadence_period=period_key(ds.cadence_period, when), epsilon=cost.epsilon,
                    delta=cost.delta))
                spends.append(Spend(unit, period, cost.epsilon, cost.delta))
            for name, content in (artifacts or {}).items():
                con.execute(t_artifacts.insert().values(release_pk=pk, name=name,
                                                        content=bytes(content)))
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
