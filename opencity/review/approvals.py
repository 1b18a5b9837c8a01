"""The approval gate's records: requests, decisions, gate passes and withdrawals.

A dataset may be published under a policy version (the content hash of its own part of the
privacy policy, :func:`privacy.approval.dataset_version`) only once a privacy officer approved
that version for that dataset. The approvals themselves (signed with the officer's key, or
answered by the officer's Airflow user) are kept and verified by
:class:`privacy.approval.ApprovalStore`; the tables here are the history the reports show. The first publication of a
dataset and every release under a new policy version therefore open a *request*; a *decision*
(approve or reject, who, when, comment) closes it. Later releases under an approved version go
through without a request. A *withdrawal* takes one published partition back off the portal;
its record (reason, who, when) is kept for good, as is the budget the release spent.

They live in the portal's state database (the one of the budget ledger and the release
registry: ``OPENCITY_STATE_URL``, SQLite or PostgreSQL, see :mod:`privacy.dp.db`, where the
tables are defined), so every run directory, DAG and command of one portal sees the same
approvals. Tables::

    review_requests(id, dataset, policy_hash, partition, dag_id, run_id, report, requested_at,
             status,             -- status: open | approved | rejected
             parameters)         -- the dataset's policy entry the release was made under
    review_decisions(id, dataset, policy_hash, decision, decided_by, decided_at, comment, source,
              partition)         -- decision: approved | rejected; source: airflow | cli | demo
    review_withdrawals(id, dataset, partition, reason, withdrawn_by, withdrawn_at, target, resources)
                                 -- the one store of withdrawals: opencity.registry reads and
                                 -- writes it too (opencity.registry.record_withdrawal)
    review_passes(id, dataset, partition, policy_hash, parameters, passed_at, via)
                                 -- every release the gate let through, and why:
                                 --   via = 'approval' (decided now) | 'approved policy'

Nothing here holds row content: dataset names, partitions, hashes, user names and comments.
"""

from __future__ import annotations

import getpass
import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select

from opencity.errors import ConfigError
from privacy.dp import db as state

SCHEMA_VERSION = "1"
APPROVED, REJECTED, OPEN = "approved", "rejected", "open"



def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def current_user() -> str:
    """Who runs this command (the OS user); the CLI's --by overrides it."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # pragma: no cover - no passwd entry
        return "unknown"


@dataclass(frozen=True)
class Decision:
    """A privacy officer's decision on one policy version of one dataset."""

    dataset: str
    policy_hash: str
    decision: str
    decided_by: str
    decided_at: str
    comment: str
    source: str
    partition: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Request:
    """An open (or closed) request for approval of a dataset's release."""

    id: int
    dataset: str
    policy_hash: str
    partition: str
    dag_id: str | None
    run_id: str | None
    report: str | None
    requested_at: str
    status: str
    parameters: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("parameters")
        return d


@dataclass(frozen=True)
class Withdrawal:
    """A partition taken back off the portal; the record and the spent budget stay."""

    dataset: str
    partition: str
    reason: str
    withdrawn_by: str
    withdrawn_at: str
    target: str
    resources: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["resources"] = list(self.resources)
        return d


def state_url(explicit: str | Path | None = None) -> str:
    """The portal's state database: ``explicit``, else $OPENCITY_STATE_URL, else the default."""
    from privacy.dp.ledger import default_state_url

    return str(explicit) if explicit else default_state_url()


class ReviewStore:
    """Requests, decisions, gate passes and withdrawals of one portal.

    Args:
        url: state URL (SQLite path, ``sqlite:///...`` or ``postgresql://...``) or a StateDB;
            None = :func:`state_url`.
    """

    def __init__(self, url: Any = None) -> None:
        from privacy.dp.ledger import StateDB

        self.db = url if isinstance(url, StateDB) else StateDB(state_url(url))
        self.db.ensure()  # (early stores get review_requests.parameters: migration 1)

    def __repr__(self) -> str:
        return f"ReviewStore({self.db.where!r})"

    def _insert(self, table: Any, **values: Any) -> int:
        with self.db.write() as con:
            return int(con.execute(table.insert().values(**values).returning(table.c.id))
                       .scalar_one())

    def _read(self, table: Any, *cols: str, dataset: str | None = None,
              status: str | None = None) -> list:
        query = select(*(table.c[c] for c in cols)).order_by(table.c.id)
        if dataset:
            query = query.where(table.c.dataset == dataset)
        if status:
            query = query.where(table.c.status == status)
        with self.db.read() as con:
            return list(con.execute(query).all())

    # -- approvals -----------------------------------------------------------------
    def decisions(self, dataset: str | None = None) -> list[Decision]:
        """Every decision (optionally of one dataset), oldest first."""
        rows = self._read(state.review_decisions, "dataset", "policy_hash", "decision",
                          "decided_by", "decided_at", "comment", "source", "partition",
                          dataset=dataset)
        return [Decision(*r) for r in rows]

    def latest_decision(self, dataset: str, policy_hash: str) -> Decision | None:
        found = [d for d in self.decisions(dataset) if d.policy_hash == policy_hash]
        return found[-1] if found else None

    def is_approved(self, dataset: str, policy_hash: str) -> bool:
        """True when the latest *verified* decision on this dataset's policy version is an
        approval: signed with the registered officer key, or answered in Airflow by the
        officer's registered Airflow user (:class:`privacy.approval.ApprovalStore`). A row
        in review_decisions alone (this table is the history) approves nothing."""
        from privacy.approval import ApprovalStore

        return ApprovalStore(self.db).is_approved(dataset, policy_hash)

    def decide(self, dataset: str, policy_hash: str, approve: bool, *, by: str,
               comment: str = "", source: str = "cli", partition: str | None = None
               ) -> Decision:
        """Record a decision and close the open requests it answers."""
        if not dataset or not policy_hash:
            raise ConfigError("a decision needs a dataset name and a policy hash")
        decision = Decision(dataset, policy_hash, APPROVED if approve else REJECTED, by or
                            current_user(), _now(), comment or "", source, partition)
        r = state.review_requests.c
        with self.db.write() as con:  # the decision and the requests it closes: one transaction
            con.execute(state.review_decisions.insert().values(**decision.as_dict()))
            con.execute(state.review_requests.update().where(
                r.dataset == dataset, r.policy_hash == policy_hash, r.status == OPEN)
                .values(status=decision.decision))
        return decision

    def request(self, dataset: str, policy_hash: str, partition: str, *,
                dag_id: str | None = None, run_id: str | None = None,
                report: str | None = None, parameters: dict[str, Any] | None = None
                ) -> Request:
        """Open a request (or return the open one for the same dataset, policy and partition)."""
        for r in self.requests(status=OPEN):
            if (r.dataset, r.policy_hash, r.partition) == (dataset, policy_hash, partition):
                return r
        rid = self._insert(
            state.review_requests, dataset=dataset, policy_hash=policy_hash,
            partition=partition, dag_id=dag_id, run_id=run_id, report=report,
            requested_at=_now(), status=OPEN,
            parameters=json.dumps(parameters or {}, sort_keys=True, default=str))
        return next(r for r in self.requests() if r.id == rid)

    def set_report(self, dataset: str, policy_hash: str, partition: str, report: str) -> None:
        """Attach the release report's path to the open request."""
        r = state.review_requests.c
        with self.db.write() as con:
            con.execute(state.review_requests.update().where(
                r.dataset == dataset, r.policy_hash == policy_hash, r.partition == partition,
                r.status == OPEN).values(report=report))

    def requests(self, status: str | None = None) -> list[Request]:
        return [Request(*r[:9], json.loads(r[9] or "{}")) for r in self._read(
            state.review_requests, "id", "dataset", "policy_hash", "partition", "dag_id",
            "run_id", "report", "requested_at", "status", "parameters", status=status)]

    # -- gate passes ----------------------------------------------------------------
    def record_pass(self, dataset: str, partition: str, policy_hash: str,
                    parameters: dict[str, Any], via: str) -> None:
        """Note that the gate let ``dataset``/``partition`` through under ``policy_hash``."""
        self._insert(state.review_passes, dataset=dataset, partition=partition,
                     policy_hash=policy_hash,
                     parameters=json.dumps(parameters, sort_keys=True, default=str),
                     passed_at=_now(), via=via)

    def passes(self, dataset: str | None = None) -> list[dict[str, Any]]:
        """Gate passes (latest per partition wins when read in order), oldest first."""
        rows = self._read(state.review_passes, "dataset", "partition", "policy_hash",
                          "parameters", "passed_at", "via", dataset=dataset)
        return [{"dataset": r[0], "partition": r[1], "policy_hash": r[2],
                 "parameters": json.loads(r[3]), "passed_at": r[4], "via": r[5]} for r in rows]

    # -- withdrawals ----------------------------------------------------------------
    def withdraw(self, dataset: str, partition: str, reason: str, *, by: str, target: str,
                 resources: list[str]) -> Withdrawal:
        if not reason or not reason.strip():
            raise ConfigError("a withdrawal needs a reason (--reason TEXT)")
        from opencity.registry import record_withdrawal

        w = Withdrawal(dataset, partition, reason.strip(), by or current_user(), _now(), target,
                       tuple(resources))
        record_withdrawal(self.db, w.dataset, w.partition, reason=w.reason, by=w.withdrawn_by,
                          withdrawn_at=w.withdrawn_at, target=w.target, resources=w.resources)
        return w

    def withdrawals(self, dataset: str | None = None) -> list[Withdrawal]:
        rows = self._read(state.review_withdrawals, "dataset", "partition", "reason",
                          "withdrawn_by", "withdrawn_at", "target", "resources",
                          dataset=dataset)
        return [Withdrawal(*r[:6], tuple(json.loads(r[6]))) for r in rows]

    def is_withdrawn(self, dataset: str, partition: str) -> bool:
        return any(w.partition == partition for w in self.withdrawals(dataset))
