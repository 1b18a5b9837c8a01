"""The approval gate's task bodies (no Airflow import): check before publish, record after.

    check   for each dataset of the run: the current policy version (privacy/policy.yaml hash)
            and whether a privacy officer approved it for that dataset; renders the staged
            release's report; opens a request for every dataset that still needs approval.
    record  after the decision (or straight away when nothing needed approval): records the
            decision (who, when, policy hash, comment) and the gate pass; on a rejection
            discards the staged outputs and returns ``published: False`` so the caller skips
            publishing.

Modes (``OPENCITY_APPROVAL_MODE``): ``airflow`` (default) waits in Airflow's ApprovalOperator;
``cli`` (embedded runs without an Airflow UI, e.g. ``dag.test()``) fails the check with a
message naming the ``opencity approve`` command, and a rerun after the approval publishes.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from datetime import datetime
from pathlib import Path
from typing import Any

from opencity.errors import ConfigError, PipelineError
from opencity.review.approvals import ReviewStore
from opencity.review.policy import policy_version
from opencity.settings import Settings, partition_name

log = logging.getLogger(__name__)

MODE_ENV = "OPENCITY_APPROVAL_MODE"
MODES = ("airflow", "cli")
REVIEW_FILE = "review.json"  # catalog/<dataset>/review.json: approvals and withdrawals


class ApprovalRequired(PipelineError):
    """A release waits for a privacy officer's approval (embedded ``cli`` mode)."""


def approval_mode() -> str:
    mode = os.environ.get(MODE_ENV, "airflow") or "airflow"
    if mode not in MODES:
        raise ConfigError(f"{MODE_ENV} must be one of {', '.join(MODES)}, got {mode!r}")
    return mode


def _reports_out(settings: Settings) -> Path:
    return settings.layout.root / "reports" / "_review"


def check(settings: Settings, datasets: list[str] | tuple[str, ...], start: datetime, *,
          dag_id: str = "", run_id: str = "") -> dict[str, Any]:
    """Which datasets of this run need approval; opens their requests and renders reports.

    Returns a JSON-able dict: ``partition``, ``policy`` (dataset -> hash), ``parameters``,
    ``pending`` (datasets waiting for approval), ``reports`` (dataset -> release report
    HTML), ``subject`` and ``body`` (Markdown for the approval request).

    Raises:
        ApprovalRequired: in ``cli`` mode, when a dataset needs approval.
    """
    from opencity.review.report import write_release_report

    mode = approval_mode()
    part = partition_name(start)
    store = ReviewStore(settings.state_url)
    out: dict[str, Any] = {"partition": part, "policy": {}, "parameters": {}, "pending": [],
                           "reports": {}, "summaries": {}, "dag_id": dag_id, "run_id": run_id}
    from privacy.approval import ApprovalStore
    from privacy.policy import load_policy

    approvals = ApprovalStore(store.db)
    policy = load_policy()
    # A product the city's policy turns off (no entry, or enabled: false) is not produced:
    # nothing of it is published, so there is nothing to approve.
    datasets = [ds for ds in datasets
                if ds in policy.datasets and policy.datasets[ds].enabled]
    for ds in datasets:
        approvals.check_compute(load_policy(), ds)  # looser than approved: refused here too
        pol = policy_version(ds)
        out["policy"][ds] = pol["hash"]
        out["parameters"][ds] = pol["parameters"]
        if not store.is_approved(ds, pol["hash"]):
            out["pending"].append(ds)
    for ds in out["pending"]:
        store.request(ds, out["policy"][ds], part, dag_id=dag_id, run_id=run_id,
                      parameters=out["parameters"][ds])
        try:
            from opencity.review.report import release_summary

            report, html = write_release_report(
                settings.layout.root, ds, part, _reports_out(settings),
                store=store, state_url=getattr(settings, "state_url", None),
                raw_dir=settings.raw_dir)
            out["reports"][ds] = str(html)
            out["summaries"][ds] = release_summary(report)
            store.set_report(ds, out["policy"][ds], part, str(html))
        except Exception as err:  # noqa: BLE001 - a report problem must not hide the request
            log.warning("release report of %s %s could not be rendered: %s", ds, part, err)
            out["summaries"][ds] = f"(report not rendered: {type(err).__name__})"
    out["subject"], out["body"] = request_text(out)
    if out["pending"] and mode == "cli":
        cmds = "; ".join(f"opencity approve {ds} --policy {out['policy'][ds]} --key "
                         f"OFFICER_KEY --run-dir {settings.layout.root}"
                         for ds in out["pending"])
        raise ApprovalRequired(
            f"{', '.join(out['pending'])} {part} waits for a privacy officer's approval "
            f"(first release or new policy version); nothing was published. Review "
            f"{', '.join(out['reports'].values()) or 'the release report'}, then run: {cmds}; "
            "and rerun this interval")
    return out


def request_text(checked: dict[str, Any],
                 links: dict[str, str] | None = None) -> tuple[str, str]:
    """Subject and Markdown body of the approval request shown in Airflow.

    ``links`` (dataset -> URL) replaces the report's file location, e.g. with the Airflow
    API server's report page (opencity.review.airflow_app) that opens from any browser."""
    part = checked["partition"]
    pending = checked["pending"]
    if not pending:
        return f"No approval needed for {part}", "Every dataset's policy version is approved."
    subject = f"Privacy review: {', '.join(pending)} {part}"
    lines = [(f"**{len(pending)} release(s) of {part} wait for your approval** (first "
              "release of the dataset, or a policy version not yet approved for it)."), ""]
    for ds in pending:
        lines += [f"* **{ds}**: {checked['summaries'].get(ds, '')}",
                  f"  * policy version `{checked['policy'][ds]}`",
                  f"  * parameters `{json.dumps(checked['parameters'][ds], sort_keys=True)}`"]
        if links and ds in links:
            lines.append(f"  * release report: [open the release report]({links[ds]})")
        elif ds in checked["reports"]:
            lines.append(f"  * release report: [{Path(checked['reports'][ds]).name}]"
                         f"({Path(checked['reports'][ds]).as_uri()}) "
                         f"(`{checked['reports'][ds]}`)")
    lines += ["", ("**Approve** publishes these releases. **Reject** publishes nothing and "
                   "discards the staged files; budget a differentially private release "
                   "already spent stays spent (the ledger and the report say so).")]
    return subject, "\n".join(lines)


def officer_users(settings: Settings) -> list[dict[str, str]]:
    """The HITL ``assigned_users`` of the approval task: the privacy officer's Airflow user,
    registered with the officer's key (``opencity officer register --airflow-user``).

    Raises:
        ConfigError: no officer (or no Airflow user of the officer) is registered; an
            approval task nobody is assigned to could be answered by any Airflow user.
    """
    from privacy.approval import ApprovalStore

    officer = ApprovalStore(settings.state_url).officer_key()
    if officer is None or not officer.airflow_user:
        raise ConfigError(
            "no privacy officer's Airflow user is registered in the state store, so anyone "
            "could answer this approval; the officer registers once: opencity officer "
            "register --public-key FILE.pub --airflow-user THEIR_AIRFLOW_USER")
    return [{"id": officer.airflow_user, "name": officer.airflow_user}]


def _who(response: dict[str, Any] | None) -> str:
    user = (response or {}).get("responded_by_user") or {}
    if isinstance(user, dict):
        return str(user.get("name") or user.get("id") or "airflow user")
    return str(user) or "airflow user"


def discard_staged(settings: Settings, dataset: str, start: datetime) -> list[str]:
    """Remove the staged (unpublished) files of ``dataset`` for this partition."""
    part = partition_name(start)
    base = settings.layout.root / "outputs" / dataset
    removed = []
    for p in [base / part, *base.glob(f".{part}*")]:
        if p.exists():
            shutil.rmtree(p) if p.is_dir() else p.unlink()
            removed.append(p.name)
    return removed


def decide(settings: Settings, checked: dict[str, Any], response: dict[str, Any],
           start: datetime, *, source: str = "airflow") -> dict[str, Any]:
    """Record a privacy officer's answer to the request of :func:`check` (at the moment it
    arrives, in the approval task itself) and, on a rejection, discard the staged files.

    Args:
        checked: what :func:`check` returned.
        response: the answer: ``chosen_options`` (["Approve"] or ["Reject"]),
            ``params_input`` (``comment``), ``responded_by_user`` ({"id", "name"}).

    Returns:
        ``{"decision": "approved"|"rejected", "by": ..., "discarded": {...}}``.
    """
    store = ReviewStore(settings.state_url)
    part = checked["partition"]
    pending = list(checked.get("pending") or [])
    if not response or not response.get("chosen_options"):
        raise PipelineError(f"{', '.join(pending)} {part}: the approval task got no answer; "
                            "this is a bug")
    approve = response["chosen_options"][0] == "Approve"
    comment = str((response.get("params_input") or {}).get("comment") or "")
    by = _who(response)
    from privacy.approval import ApprovalStore

    approvals = ApprovalStore(store.db)
    for ds in pending:
        version = approvals.known_version(ds, checked["policy"][ds])
        if version is None:
            raise PipelineError(f"{ds}: policy version {checked['policy'][ds]} was not noted "
                                "by the gate's check; this is a bug")
        approvals.record_airflow(version, approve, by=by, comment=comment)
        store.decide(ds, checked["policy"][ds], approve, by=by, comment=comment,
                     source=source, partition=part)
        record_in_registry(settings, ds, part, approve, by, comment, checked["policy"][ds],
                           source)
    if approve:
        return {"decision": "approved", "by": by, "discarded": {}}
    discarded = {ds: discard_staged(settings, ds, start) for ds in checked["policy"]}
    log.warning("%s %s rejected by %s: nothing published, staged files discarded",
                ", ".join(pending), part, by)
    return {"decision": "rejected", "by": by, "discarded": discarded}


def record(settings: Settings, checked: dict[str, Any]) -> dict[str, Any]:
    """After the gate: may this run publish? Records the gate pass of every dataset.

    Every dataset that needed approval must now be approved under its policy version (by
    :func:`decide`, the CLI or the UI); otherwise (rejected) nothing is published.

    Returns:
        ``{"published": bool, "decision": ..., "by": ...}``; ``published`` False means the
        caller must not publish.
    """
    store = ReviewStore(settings.state_url)
    part = checked["partition"]
    pending = list(checked.get("pending") or [])
    latest = {ds: store.latest_decision(ds, checked["policy"][ds]) for ds in pending}
    # Verified approvals only (signed, or the officer's Airflow user), not the history rows.
    refused = [ds for ds in pending if not store.is_approved(ds, checked["policy"][ds])]
    if refused:
        by = ", ".join(sorted({d.decided_by for d in latest.values() if d})) or "nobody"
        return {"published": False, "decision": "rejected", "by": by}
    for ds, h in checked["policy"].items():
        via = "approval" if ds in pending else "approved policy"
        store.record_pass(ds, part, h, checked["parameters"][ds], via)
        write_catalog_review(settings, ds, store)
    by = ", ".join(sorted({d.decided_by for d in latest.values() if d})) or None
    return {"published": True, "decision": "approved" if pending else "already approved",
            "by": by}


def record_in_registry(settings: Settings, dataset: str, partition: str, approve: bool,
                       by: str, comment: str, policy_hash: str, source: str) -> None:
    """The decision in the release registry too (opencity.registry, same state DB)."""
    from opencity.registry import Registry

    Registry(settings.state_url).record_decision(
        dataset, partition, "approved" if approve else "rejected", by, comment,
        details={"policy_hash": policy_hash, "source": source})


def write_catalog_review(settings: Settings, dataset: str, store: ReviewStore) -> Path | None:
    """``catalog/<dataset>/review.json``: the approvals and withdrawals of the dataset.

    The local catalog's publisher rewrites package.json from each release, so the review
    record lives next to it in a file the publisher never touches (rejections stay in the
    registry only: a rejected release leaves the catalog as it was).
    """
    if settings.publish_target != "local":
        return None
    ddir = settings.layout.catalog / dataset
    approvals = [d.as_dict() for d in store.decisions(dataset) if d.decision == "approved"]
    withdrawals = [w.as_dict() for w in store.withdrawals(dataset)]
    if not approvals and not withdrawals:
        return None
    from opencity.io import write_json_atomic

    return write_json_atomic({"dataset": dataset, "approvals": approvals,
                              "withdrawals": withdrawals}, ddir / REVIEW_FILE, public=True,
                             sort_keys=True)
