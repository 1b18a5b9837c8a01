"""The release registry: every published partition, with the parameters that protected it.

Lives in the portal's state database (``Settings.state_url``, next to the budget ledger).
The publish step of every pipeline goes through :func:`publish_partition`::

    from opencity.registry import publish_partition

    result = publish_partition(settings, release, params={"threshold": 15})

which (1) checks ``params`` against the stored release policy (a caller may only tighten);
(2) refuses, with :class:`RepublishRefusedError` naming the partition and the old and new
parameters, to publish an already published partition with different privacy parameters
(nothing in the catalog changes); refuses a table with a column the policy does not list
with a role; (3) publishes through the configured publisher, with the
package's privacy block stating the parameters **per partition** (``privacy["partitions"]``)
and, for DP datasets, the per-person portal budget of the period (``privacy["portal_budget"]``);
(4) records (dataset, partition, params, policy hash, file hashes, time). Re-running a
published partition with the same parameters publishes it again (the files are the replayed
release, byte for byte) and keeps its first record.

Tables (defined in :mod:`privacy.dp.db`, the state database's one schema)::

    published(dataset, partition, params_json, policy_hash, files_json,   -- {name: sha256}
                                     -- policy_hash: the dataset's approved policy version
              statement_json,        -- the partition's privacy statement, fixed at first
                                     -- publication (params, policy hash, portal budget)
              published_at, PRIMARY KEY(dataset, partition))
    decisions(id, dataset, partition, decision, actor, reason, details_json, decided_at)
    review_withdrawals(id, dataset, partition, reason, withdrawn_by, withdrawn_at, target,
                       resources)   -- the one store of withdrawals (with opencity.review);
                                    -- the older ``withdrawals`` table is no longer written

Extension points for approvals and withdrawals (issue 11, ``opencity/review``):
:meth:`Registry.record_decision` appends an approval decision (``approved``/``rejected``/
anything the review flow defines) for a partition, :meth:`Registry.decisions` reads them back;
:meth:`Registry.withdraw` marks a published partition withdrawn and :meth:`Registry.withdrawn`
tells whether it is. The registry does not enforce approvals itself: a review gate calls
``decisions`` before :func:`publish_partition`. A withdrawn partition is refused by
:func:`publish_partition` (withdrawal is final; a new release needs a new partition).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select

from opencity.errors import ConfigError
from privacy.dp import chain
from privacy.dp import db as state
from privacy.dp.ledger import Ledger, StateDB

log = logging.getLogger(__name__)

SCHEMA_VERSION = "1"


class RepublishRefusedError(ConfigError):
    """A published partition was asked to be published again with other parameters."""


@dataclass(frozen=True)
class PublishedPartition:
    """One registry record."""

    dataset: str
    partition: str
    params: dict[str, Any]
    policy_hash: str
    files: dict[str, str]
    statement: dict[str, Any]
    published_at: str


def _canonical(params: Mapping[str, Any]) -> str:
    return json.dumps(params, sort_keys=True, separators=(",", ":"), default=str)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class Registry:
    """The release registry in the state DB.

    Args:
        url: state URL (SQLite path / ``postgresql://``) or a StateDB.
        policy: the release policy (default :func:`privacy.policy.load_policy`).
    """

    def __init__(self, url: str | Path | StateDB, policy: Any = None) -> None:
        from privacy.policy import load_policy

        self.db = url if isinstance(url, StateDB) else StateDB(url)
        self.policy = policy if policy is not None else load_policy()
        self.db.ensure()

    def version_hash(self, dataset: str) -> str:
        """The dataset's policy version (:func:`privacy.approval.dataset_version`): what the
        officer approved and what a published partition records as its ``policy_hash``."""
        from privacy.approval import dataset_version

        return dataset_version(self.policy, dataset).hash

    # -- reads ------------------------------------------------------------------------------
    _P = state.published.c
    _COLS = (_P.dataset, _P.partition, _P.params_json, _P.policy_hash, _P.files_json,
             _P.statement_json, _P.published_at)

    @staticmethod
    def _row(r: tuple) -> PublishedPartition:
        return PublishedPartition(r[0], r[1], json.loads(r[2]), r[3], json.loads(r[4]),
                                  json.loads(r[5]), r[6])

    def get(self, dataset: str, partition: str) -> PublishedPartition | None:
        """The record of a published partition, if any."""
        with self.db.read() as con:
            row = con.execute(select(*self._COLS).where(
                self._P.dataset == dataset, self._P.partition == partition)).first()
        return self._row(row) if row else None

    def partitions(self, dataset: str | None = None) -> list[PublishedPartition]:
        """Every published partition (of one dataset), by dataset and partition."""
        query = select(*self._COLS).order_by(self._P.dataset, self._P.partition)
        if dataset is not None:
            query = query.where(self._P.dataset == dataset)
        with self.db.read() as con:
            rows = con.execute(query).all()
        return [self._row(r) for r in rows]

    # -- the checks before publishing -------------------------------------------------------
    def check_policy(self, dataset: str, params: Mapping[str, Any]) -> None:
        """Raise ConfigError if ``params`` are looser than the policy's entry for ``dataset``.

        Known keys: epsilon, delta (single-unit DP), spend ({unit: {epsilon, delta}}), k, l,
        threshold (at least the policy's), max_suppression (at most the policy's).
        """
        ds = self.policy.dataset(dataset)
        where = f"datasets.{dataset}"

        def _loose(key: str, policy_value: Any, value: Any, larger_is_tighter: bool) -> None:
            if policy_value is None or value is None:
                raise ConfigError(f"{where}.{key}: parameter {key}={value!r} does not apply to "
                                  f"a {ds.method} release")
            if (value < policy_value) if larger_is_tighter else (value > policy_value * (
                    1 + 1e-9)):
                raise ConfigError(
                    f"{where}.{key}: the release would use {key}={value!r} but the release "
                    f"policy ({self.policy.path}) requires "
                    f"{'at least' if larger_is_tighter else 'at most'} {policy_value!r}; "
                    "callers may only tighten the policy. Nothing was published")

        spend = dict(params.get("spend") or {})
        if "epsilon" in params or "delta" in params:
            spend[ds.unit] = {"epsilon": params.get("epsilon", 0.0),
                              "delta": params.get("delta", 0.0)}
        for unit, cost in spend.items():
            allowed = ds.spend.get(unit)
            if allowed is None:
                raise ConfigError(f"{where}: the release spends from unit {unit!r}, which the "
                                  f"policy does not list for it ({', '.join(ds.units)})")
            _loose(f"epsilon[{unit}]", allowed.epsilon, float(cost.get("epsilon", 0.0)), False)
            _loose(f"delta[{unit}]", allowed.delta, float(cost.get("delta", 0.0)), False)
        for key, tighter_up in (("k", True), ("l", True), ("threshold", True),
                                ("max_suppression", False)):
            if key in params:
                _loose(key, getattr(ds, key), params[key], tighter_up)

    def check(self, dataset: str, partition: str, params: Mapping[str, Any]
              ) -> PublishedPartition | None:
        """Refuse a publication that the policy or the partition's history forbids.

        Returns the existing record when this is a replay with the same parameters.

        Raises:
            ConfigError: looser than the policy.
            RepublishRefusedError: the partition was published (or withdrawn) with other
                parameters.
        """
        self.check_policy(dataset, params)
        if self.withdrawn(dataset, partition):
            raise RepublishRefusedError(
                f"{dataset} {partition} was withdrawn; a withdrawn partition is not published "
                "again (publish a new partition instead). Nothing was published")
        old = self.get(dataset, partition)
        if old is not None and _canonical(old.params) != _canonical(params):
            raise RepublishRefusedError(
                f"{dataset} {partition} is already published with privacy parameters "
                f"{_canonical(old.params)} (policy {old.policy_hash[:12]}, {old.published_at});"
                f" refusing to republish it with {_canonical(params)}: together the two "
                "versions would disclose more than either. A policy change applies to "
                "partitions not yet published. Nothing in the catalog was changed")
        return old

    def chain_entry(self, dataset: str, partition: str) -> dict[str, Any] | None:
        """The newest release entry of the state store's hash chain for a partition."""
        with self.db.read() as con:
            c = state.chain.c
            row = con.execute(
                select(c.seq, c.kind, c.dataset, c.partition, c.at, c.body_json, c.prev_hash,
                       c.hash).where(c.kind == "release", c.dataset == dataset,
                                     c.partition == partition)
                .order_by(c.seq.desc()).limit(1)).first()
        if row is None:
            return None
        return {"seq": int(row[0]), "kind": row[1], "dataset": row[2], "partition": row[3],
                "at": row[4], "body": json.loads(row[5]), "prev_hash": row[6], "hash": row[7]}

    def chain_hashes(self, dataset: str, partition: str) -> set[str]:
        """Hashes of every release entry the chain holds for a partition (a replay after a
        crash may have added a newer one than the catalog shows)."""
        with self.db.read() as con:
            c = state.chain.c
            rows = con.execute(select(c.hash).where(
                c.kind == "release", c.dataset == dataset, c.partition == partition)).all()
        return {r[0] for r in rows}

    # -- writes -----------------------------------------------------------------------------
    def _release_body(self, con: Any, dataset: str, partition: str, params_json: str,
                      policy_hash: str, files: Mapping[str, str]) -> dict[str, Any]:
        """What a release's chain entry witnesses: parameters, policy, files and the spends
        of every privacy unit for this partition (from the ledger, same transaction)."""
        s, r = state.spends.c, state.releases.c
        rows = con.execute(
            select(s.privacy_unit, s.period, s.epsilon, s.delta)
            .join_from(state.spends, state.releases, s.release_pk == r.id)
            .where(r.dataset == dataset, r.partition == partition)
            .order_by(s.privacy_unit, s.period)).all()
        spends = [{"unit": r[0], "period": r[1], "epsilon": float(r[2]),
                   "delta": float(r[3])} for r in rows]
        return {"params": json.loads(params_json), "policy_hash": policy_hash,
                "files": dict(sorted(files.items())), "spends": spends}

    def record(self, dataset: str, partition: str, params: Mapping[str, Any],
               files: Mapping[str, str], statement: Mapping[str, Any]) -> PublishedPartition:
        """Record a publication BEFORE the catalog switch (first one wins; a replay with other
        file hashes updates them), with its entry in the hash chain in the same transaction.
        A crash after this and before the switch leaves a partition the registry knows."""
        params_json = _canonical(params)
        with self.db.write() as con:
            row = con.execute(select(*self._COLS).where(
                self._P.dataset == dataset, self._P.partition == partition)).first()
            files_json = json.dumps(dict(files), sort_keys=True)
            if row is None or row[4] != files_json:
                policy_hash = row[3] if row is not None else self.version_hash(dataset)
                chain.append(con, "release", dataset, partition, self._release_body(
                    con, dataset, partition, params_json, policy_hash, files))
            if row is None:
                con.execute(state.published.insert().values(
                    dataset=dataset, partition=partition, params_json=params_json,
                    policy_hash=self.version_hash(dataset),
                    files_json=json.dumps(dict(files), sort_keys=True),
                    statement_json=json.dumps(dict(statement), sort_keys=True, default=str),
                    published_at=_now()))
            else:
                if row[2] != params_json:
                    raise RepublishRefusedError(
                        f"{dataset} {partition} was recorded with {row[2]} while this run "
                        f"published {params_json}; this is a race between two runs")
                con.execute(state.published.update().where(
                    self._P.dataset == dataset, self._P.partition == partition).values(
                    files_json=json.dumps(dict(files), sort_keys=True)))
        rec = self.get(dataset, partition)
        assert rec is not None
        return rec

    def record_decision(self, dataset: str, partition: str, decision: str, actor: str,
                        reason: str = "", details: Mapping[str, Any] | None = None) -> int:
        """Append an approval decision for a partition (extension point for review flows).

        Returns the decision id.
        """
        if not decision or not actor:
            raise ConfigError("a decision needs a decision name and an actor")
        with self.db.write() as con:
            row = con.execute(state.decisions.insert().values(
                dataset=dataset, partition=partition, decision=decision, actor=actor,
                reason=reason, details_json=json.dumps(dict(details or {}), sort_keys=True,
                                                       default=str),
                decided_at=_now()).returning(state.decisions.c.id)).first()
            chain.append(con, "decision", dataset, partition,
                         {"decision": decision, "id": int(row[0])})
        return int(row[0])

    def decisions(self, dataset: str, partition: str | None = None) -> list[dict[str, Any]]:
        """Recorded decisions, oldest first."""
        d = state.decisions.c
        query = select(d.id, d.dataset, d.partition, d.decision, d.actor, d.reason,
                       d.details_json, d.decided_at).where(d.dataset == dataset).order_by(d.id)
        if partition is not None:
            query = query.where(d.partition == partition)
        with self.db.read() as con:
            rows = con.execute(query).all()
        return [{"id": r[0], "dataset": r[1], "partition": r[2], "decision": r[3],
                 "actor": r[4], "reason": r[5], "details": json.loads(r[6]),
                 "decided_at": r[7]} for r in rows]

    def withdraw(self, dataset: str, partition: str, actor: str, reason: str) -> None:
        """Mark a published partition withdrawn (removing its files from the catalog is the
        publisher's job; the budget it spent stays spent). Once: a second call changes
        nothing."""
        if self.get(dataset, partition) is None:
            raise ConfigError(f"{dataset} {partition} is not published; nothing to withdraw")
        if not self.withdrawn(dataset, partition):
            record_withdrawal(self.db, dataset, partition, reason=reason, by=actor,
                              withdrawn_at=_now(), target="registry", resources=())

    def withdrawn(self, dataset: str, partition: str) -> bool:
        """Whether the partition was withdrawn (the one store: ``review_withdrawals``)."""
        with self.db.read() as con:
            w = state.review_withdrawals.c
            return con.execute(select(w.id).where(
                w.dataset == dataset, w.partition == partition)).first() is not None


def record_withdrawal(db: StateDB, dataset: str, partition: str, *, reason: str, by: str,
                      withdrawn_at: str, target: str, resources: Any) -> None:
    """The one writer of withdrawals (:class:`Registry` and
    :class:`opencity.review.approvals.ReviewStore`): a ``review_withdrawals`` row and, for
    the first withdrawal of a partition the registry holds, its ``withdrawal`` entry in the
    hash chain, in one transaction."""
    w, p = state.review_withdrawals.c, state.published.c
    with db.write() as con:
        first = con.execute(select(w.id).where(w.dataset == dataset,
                                               w.partition == partition)).first() is None
        con.execute(state.review_withdrawals.insert().values(
            dataset=dataset, partition=partition, reason=reason, withdrawn_by=by,
            withdrawn_at=withdrawn_at, target=target, resources=json.dumps(list(resources))))
        if first and con.execute(select(p.dataset).where(
                p.dataset == dataset, p.partition == partition)).first() is not None:
            chain.append(con, "withdrawal", dataset, partition, {"reason": reason})


def _partition_of(release: Any) -> str:
    parts = {r.partition for r in release.resources if r.partition}
    if len(parts) != 1:
        raise ConfigError(f"release {release.name} must publish exactly one partition, got "
                          f"{sorted(parts) or 'none'}")
    return parts.pop()


def _partition_date(partition: str) -> date:
    try:
        return date.fromisoformat(partition.removeprefix("dt="))
    except ValueError:
        raise ConfigError(f"partition {partition!r} is not dt=YYYY-MM-DD") from None


def check_columns(policy_ds: Any, resources: Any) -> None:
    """Every column of a published table (Parquet schema, CSV header) must be listed in the
    policy with a role; anything else is refused (a new column needs a reviewed policy)."""
    import csv

    import pyarrow.parquet as pq

    allowed = set(policy_ds.published_columns)
    for res in resources:
        path = Path(res.path)
        if res.format == "parquet":
            names = pq.read_schema(path).names
        elif res.format == "csv":
            with path.open(newline="", encoding="utf-8") as fh:
                names = next(csv.reader(fh), [])
        else:
            continue
        extra = [c for c in names if c not in allowed]
        if extra:
            raise ConfigError(
                f"{policy_ds.name}: {path.name} publishes column(s) {', '.join(extra)} that "
                f"the release policy does not list under datasets.{policy_ds.name}.columns "
                "(every published column needs a role: quasi_identifier, sensitive or "
                "public). Nothing was published")


def _statement(registry: Registry, dataset: str, partition: str,
               params: Mapping[str, Any]) -> dict[str, Any]:
    """The partition's privacy statement, fixed at its first publication."""
    ds = registry.policy.dataset(dataset)
    out: dict[str, Any] = {"params": dict(params),
                           "policy_hash": registry.version_hash(dataset)}
    if ds.method == "differential_privacy":
        ledger = Ledger(registry.db, registry.policy)
        when = _partition_date(partition)
        budget = {}
        for unit in ds.units:
            ub = registry.policy.unit(unit)
            spent = ledger.spent(unit, when)
            budget[unit] = {
                "period": ub.period_key(when), "cap_epsilon": ub.epsilon,
                "cap_delta": ub.delta, "spent_epsilon_at_publication": spent[0],
                "spent_delta_at_publication": spent[1],
                "per": f"{unit} per calendar {ub.period}, every dataset of the portal",
            }
        out["portal_budget"] = budget
    return out


def publish_partition(settings: Any, release: Any, params: Mapping[str, Any], *,
                      publisher: Any = None) -> Any:
    """Check, publish and record one partition of ``release`` (a publish.base.DatasetRelease).

    Args:
        settings: the run's Settings (state_url, publish target).
        release: the DatasetRelease of this run (exactly one partition in its resources).
        params: the privacy parameters this partition was produced with (epsilon/delta or
            spend per unit, k/l/max_suppression, threshold, ...); compared with the policy and
            with the partition's earlier publication.
        publisher: a publisher (default ``opencity.publish_targets.publisher_for(settings)``).

    Returns:
        the publisher's PublishResult.

    Raises:
        ConfigError / RepublishRefusedError: refused; nothing was published.
    """
    from privacy.approval import ApprovalStore
    from publish.base import sha256_file

    registry = Registry(settings.state_url)
    dataset = release.name
    partition = _partition_of(release)
    # Only under a policy version the privacy officer approved (signed or in Airflow).
    ApprovalStore(registry.db).require_approved(registry.policy, dataset)
    old = registry.check(dataset, partition, params)
    check_columns(registry.policy.dataset(dataset), release.resources)
    statement = old.statement if old is not None else _statement(registry, dataset, partition,
                                                                 params)
    history = {p.partition: p.statement for p in registry.partitions(dataset)}
    history[partition] = statement
    privacy = {**release.privacy, "policy_hash": statement["policy_hash"],
               "partitions": dict(sorted(history.items()))}
    if "portal_budget" in statement:
        privacy["portal_budget"] = statement["portal_budget"]
    if publisher is None:
        from opencity.publish_targets import publisher_for

        publisher = publisher_for(settings)
    check_witness(registry, publisher, dataset)
    import tempfile

    with tempfile.TemporaryDirectory(prefix="opencity-publish-") as tmp:
        # exactly the files the catalog will publish (e.g. its CSV copies with names)
        prepare = getattr(publisher, "prepare", None)
        final = prepare(release, tmp) if prepare is not None else release
        # Record before publish: the registry (and its hash chain) knows the partition and
        # its files before the catalog switch, so a crash at any instant leaves no published
        # partition or one the registry knows.
        files = {f"{r.partition}/{r.name}": sha256_file(Path(r.path)) for r in final.resources}
        registry.record(dataset, partition, params, files, statement)
        entry = registry.chain_entry(dataset, partition)
        if entry is not None:  # the partition's public record carries its chain entry
            privacy["chain"] = chain.public_entry(entry)
        final = replace(final, privacy=privacy)
        result = (publisher.publish_prepared(final) if prepare is not None
                  else publisher.publish(final))
    log.info("registry: %s %s %s with %s", dataset, partition,
             "replayed" if old is not None else "published", _canonical(params))
    return result


def check_witness(registry: Registry, publisher: Any, dataset: str) -> None:
    """Refuse to publish into a catalog whose published releases this state store does not
    hold: a new (or reset) state database must not start the past again. The catalog's own
    records are the witness: every partition it lists must be in the registry, with the same
    chain entry when the record carries one.

    Raises:
        ConfigError: naming the partitions the state store does not know; nothing published.
    """
    reader = getattr(publisher, "published_records", None)
    if reader is None:
        return
    records = reader(dataset) or {}
    unknown, differ = [], []
    for part, entry in sorted(records.items()):
        if registry.get(dataset, part) is None:
            unknown.append(part)
            continue
        if entry and entry.get("hash") and entry["hash"] not in registry.chain_hashes(
                dataset, part):
            differ.append(part)
    if unknown or differ:
        what = []
        if unknown:
            what.append(f"{len(unknown)} published partition(s) it has no record of "
                        f"({', '.join(unknown[:5])}{' ...' if len(unknown) > 5 else ''})")
        if differ:
            what.append(f"{len(differ)} whose chain entry differs from the catalog's "
                        f"({', '.join(differ[:5])})")
        raise ConfigError(
            f"the state database {registry.db.where} does not hold the releases the catalog "
            f"published for {dataset}: {'; '.join(what)}. A new or reset state database "
            "cannot publish into an existing catalog (it would forget what was spent and "
            "published). Point OPENCITY_STATE_URL at the portal's state database; `opencity "
            "verify` checks the catalog against it. Nothing was published")
