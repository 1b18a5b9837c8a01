"""The release protocol, once for every product: a product is a specification (ProductSpec),
one runner executes its release.

    stage  (the product's own step: compute into restricted staging; DP products inside
            privacy.dp.Ledger.release, so the spend is recorded once and a rerun replays it)
      -> commit: composition guard -> quality gate -> move staging into outputs/ (+ CSV copy)
      -> approval (opencity.review.airflow.approval_gate, in the DAG)
      -> publish: release registry (policy + registry check, record, hash chain) -> catalog
      -> manifest (opencity.manifest.write_run_manifest; the DAG's manifest task)

The steps hand typed payloads to each other (Staged, Committed, Published); between Airflow
tasks they travel as plain dicts (``to_xcom``/``from_xcom``), so the run store can map the
paths they hold. Release DAGs are built from specs by :func:`opencity.dagkit.release_dag`;
docs/architecture.md has the recipe for a new product.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opencity import __version__
from opencity.errors import DataQualityError, PipelineError

if TYPE_CHECKING:
    from opencity.settings import Settings
    from publish.base import DatasetRelease

class ProductFailedError(PipelineError):
    """A product of the run failed while another was published (terminal: rerun the
    interval after fixing what the failed task's log says)."""


def _payload(cls):
    """A frozen payload dataclass with ``to_xcom``/``from_xcom``: its fields plus the
    product's own ``details`` flattened beside them (the run store maps paths in them)."""

    names = tuple(f.name for f in dataclasses.fields(cls) if f.name != "details")

    def to_xcom(self) -> dict[str, Any]:
        out = dict(self.details)
        out.update({n: getattr(self, n) for n in names})
        for n in names:
            if isinstance(out[n], tuple):
                out[n] = list(out[n])
        return out

    def from_xcom(c, data: Mapping[str, Any] | None):
        if data is None:
            return None
        data = dict(data)
        kwargs = {n: data.pop(n) for n in names if n in data}
        for n in names:
            if isinstance(kwargs.get(n), list):
                kwargs[n] = tuple(kwargs[n])
        return c(**kwargs, details=data)

    cls.to_xcom = to_xcom
    cls.from_xcom = classmethod(from_xcom)
    return cls


class _Details:
    """``payload["key"]`` / ``payload.get("key")`` read the product's own details."""

    details: Mapping[str, Any]

    def __getitem__(self, key: str) -> Any:
        return self.details[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.details.get(key, default)


@_payload
@dataclass(frozen=True)
class Staged(_Details):
    """What a product's stage step left in restricted staging for the commit step.

    ``released`` False: the step ran but there is nothing to publish this period (e.g. a
    microdata week that cannot reach k), with ``reason``. ``skipped``: no input rows.
    ``details`` are the product's own facts (method, ledger entry, parameters), read by its
    guard, gate, release metadata and manifest.
    """

    dataset: str
    partition: str
    staging_dir: str | None = None
    skipped: bool = False
    released: bool = True
    reason: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)


@_payload
@dataclass(frozen=True)
class Committed(_Details):
    """A partition moved into outputs/ after its guard and gate passed."""

    dataset: str
    partition: str
    output_dir: str | None = None
    files: tuple[str, ...] = ()
    rows: int | None = None
    validation: Mapping[str, Any] | None = None
    guard: Mapping[str, Any] | None = None
    skipped: bool = False
    reason: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)


@_payload
@dataclass(frozen=True)
class Published:
    """A partition the registry recorded and the catalog publishes."""

    dataset: str
    partition: str
    published: bool = True
    target: str | None = None
    url: str | None = None
    created: bool | None = None
    uploaded: tuple[str, ...] = ()
    unchanged: tuple[str, ...] = ()
    reason: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)


# A step function of a spec: (settings, ingested, staged-so-far, start, end) -> Staged.
StageFn = Callable[["Settings", Mapping[str, Any], "Staged | None", datetime, datetime],
                   Staged]


@dataclass(frozen=True)
class Step:
    """One task of a product's staging: its task id and body."""

    task_id: str
    run: StageFn


@dataclass(frozen=True)
class ProductSpec:
    """Everything the runner needs to release one dataset.

    Args:
        dataset: catalog name (also the policy entry's name).
        files: what the stage step leaves in staging; the first is the product's table
            (Parquet) unless ``table`` is None. Every name must be there for the commit.
        stages: the staging tasks in order (one, or e.g. compute then dashboard).
        release: (settings, committed, start, end, provenance) -> DatasetRelease: resources,
            fields, privacy metadata (the statement's parameters); ``committed.details`` are
            the stage step's.
        params: (settings, committed) -> the privacy parameters the release registry checks
            against the approved policy.
        gate: (settings, staged, folder, start) -> summary; the quality gate on the files in
            ``folder`` (raises DataQualityError: nothing moves).
        guard: (settings, staged, folder, start) -> summary; the composition guard
            (raises: nothing moves). None: the product composes with nothing else.
        csv: name of the CSV copy of the table written beside outputs (None: no copy).
        keep: entries of the committed partition a replayed staging may lack and the commit
            carries over (e.g. the first run's ingest report ``_run``).
        commit_task, publish_task: task ids in the DAG.
        outlet: the Asset key the publish task declares (opencity.dagkit.asset).
        provenance: (committed) -> extra provenance entries (e.g. the ledger id).
    """

    dataset: str
    files: tuple[str, ...]
    stages: tuple[Step, ...]
    release: Callable[..., DatasetRelease]
    params: Callable[[Settings, Committed], dict[str, Any]]
    gate: Callable[[Settings, Staged, Path, datetime], Mapping[str, Any]]
    guard: Callable[[Settings, Staged, Path, datetime], Mapping[str, Any]] | None = None
    table: str | None = None
    csv: str | None = None
    keep: tuple[str, ...] = ()
    commit_task: str = "commit_partition"
    publish_task: str = "publish"
    outlet: str | None = None
    provenance: Callable[[Committed], Mapping[str, Any]] | None = None

    def __post_init__(self) -> None:
        if not self.files or not self.stages:
            raise ValueError(f"ProductSpec {self.dataset}: files and stages are required")
        if self.table is not None and self.table not in self.files:
            raise ValueError(f"ProductSpec {self.dataset}: table {self.table} is not staged")

    @property
    def task_ids(self) -> tuple[str, ...]:
        return (*(s.task_id for s in self.stages), self.commit_task, self.publish_task)


def as_staged(dataset: str, start: datetime, step: Staged | Mapping[str, Any]) -> Staged:
    """A stage step's result as the runner's payload: a Staged as it is, or a step's dict
    (``staging_dir``, ``skipped``, ``released``, ``reason``; the rest are its details)."""
    from opencity.settings import partition_name

    if isinstance(step, Staged):
        return step
    data = dict(step)
    data.setdefault("dataset", dataset)
    data.setdefault("partition", partition_name(start))
    if data.get("skipped"):
        data.setdefault("released", False)
    return Staged.from_xcom(data)


def _nothing(staged: Staged) -> bool:
    return staged.skipped or not staged.released


def commit(spec: ProductSpec, settings: Settings, staged: Staged,
           start: datetime) -> Committed:
    """Guard + quality gate on the staged files, then move them into
    outputs/<dataset>/<partition>/ (and the table's CSV copy beside outputs).

    Idempotent: a rerun after an earlier try moved staging into place checks the committed
    partition again and returns the same result. A failed guard or gate discards staging.
    """
    import pyarrow.parquet as pq

    from opencity.io import discard_on_failure, replace_dir, write_csv_atomic
    from opencity.pipelines.partitions import committed
    from publish.leftovers import clean_partition_leftovers

    if _nothing(staged):
        return Committed(spec.dataset, staged.partition, skipped=True,
                         reason=staged.reason or "not released", details=staged.details)
    staging = Path(staged.staging_dir or "")
    final = settings.layout.output(spec.dataset, start)
    if committed(staging, final, *spec.files):  # rerun alone after an earlier try moved the staging directory into place
        guard = spec.guard(settings, staged, final, start) if spec.guard else None
        validation = spec.gate(settings, staged, final, start)
    else:
        missing = [n for n in spec.files if not (staging / n).exists()]
        if missing:
            raise DataQualityError(
                f"nothing complete staged for {spec.dataset} {staged.partition}: "
                f"{', '.join(missing)} missing in {staging}; rerun the "
                f"{' and '.join(s.task_id for s in spec.stages)} task(s)")
        with discard_on_failure(staging):
            guard = spec.guard(settings, staged, staging, start) if spec.guard else None
            validation = spec.gate(settings, staged, staging, start)
            for name in spec.keep:
                if (final / name).exists() and not (staging / name).exists():
                    shutil.copytree(final / name, staging / name)
        final = replace_dir(staging, final)
    rows = None
    if spec.table is not None:
        table = pq.read_table(final / spec.table)
        rows = table.num_rows
        if spec.csv:
            write_csv_atomic(table, settings.layout.csv(spec.dataset, start) / spec.csv,
                             restricted=True)
    clean_partition_leftovers(final)
    return Committed(spec.dataset, staged.partition, output_dir=str(final),
                     files=tuple(sorted(p.name for p in final.iterdir())), rows=rows,
                     validation=dict(validation or {}),
                     guard=dict(guard) if guard is not None else None,
                     details=staged.details)


def publish(spec: ProductSpec, settings: Settings, committed: Committed, start: datetime,
            end: datetime, run_id: str, ingested: Mapping[str, Any]) -> Published:
    """Record the committed partition in the release registry (approved policy, portal
    budget, hash chain) and publish it to the configured catalog."""
    from opencity.registry import publish_partition

    if committed.skipped:
        return Published(spec.dataset, committed.partition, published=False,
                         reason=committed.reason)
    provenance = {"pipeline_version": __version__, "run_id": run_id,
                  "input_hashes": dict(ingested.get("input_hashes") or {})}
    if spec.provenance is not None:
        provenance.update(spec.provenance(committed))
    release = spec.release(settings, committed, start, end, provenance)
    result = publish_partition(settings, release, spec.params(settings, committed))
    return Published(spec.dataset, committed.partition, target=result.target, url=result.url,
                     created=result.created, uploaded=tuple(result.uploaded),
                     unchanged=tuple(result.unchanged))


@dataclass(frozen=True)
class Outcome:
    """One product's payloads at the manifest step (None: that step failed or never ran)."""

    staged: Staged | None
    committed: Committed | None
    published: Published | None

    @property
    def failed(self) -> bool:
        return self.staged is None or self.committed is None or self.published is None


def failed_products(outcomes: Mapping[str, Outcome]) -> list[str]:
    return [ds for ds, o in outcomes.items() if o.failed]


def raise_for_failed(outcomes: Mapping[str, Outcome], start: datetime,
                     manifest_path: str) -> None:
    """After the manifest is written: fail the run naming each product that failed."""
    from opencity.settings import partition_name

    failed = failed_products(outcomes)
    if failed:
        done = [d for d in outcomes if d not in failed]
        raise ProductFailedError(
            f"{', '.join(failed)} failed for {partition_name(start)} (see the failed task's "
            f"log); {', '.join(done) or 'no other product'} went through on its own and the "
            f"manifest {manifest_path} records it. Fix the cause and rerun the interval")


def failure_record(dataset: str) -> dict[str, Any]:
    return {"failed": True, "published": False,
            "reason": f"a task of {dataset} failed (see its log); nothing of it was published "
                      "for this period"}
