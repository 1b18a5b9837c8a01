"""The thin I/O layer: reading reference tables, writing partitions atomically, file modes.

Restricted zones (raw input, clean partitions, the quarantine, staging, the budget ledger and
the release registry) hold personal or pre-release data: their folders are created 0700 and
their files 0600 whatever the process umask, or 0750/0640 with the group named by
``OPENCITY_RESTRICTED_GROUP`` (e.g. the Airflow workers' group). Use :func:`restricted_dir`
for a folder, :func:`restricted_file` after writing a file (or the ``restricted=True``
writers). A restricted folder or file found more open than that is tightened, with one
warning per path and process.

The one atomic write: every file someone else reads is written through :func:`write_atomic`
(or its ``write_*_atomic`` shorthands): a temporary name next to the target, fsync, the zone's
mode (``restricted=True``: owner-only; ``public=True``: the published catalog, world-readable;
neither: the umask), one rename, the folder fsynced. Folders move with :func:`replace_dir` /
:func:`rename_dir`, links with :func:`replace_symlink`. No other module renames files
(tests/unit/test_architecture.py fails on one).

The privacy statement of a DP release (``privacy.json``) has one type,
:class:`PrivacyStatement`: the producers (311 weekly, mobility, KPIs) write it with
:func:`write_statement` (or store :meth:`PrivacyStatement.to_bytes` as a ledger artefact), the
release gate, the review and the catalog metadata read it with :func:`read_statement` /
:meth:`PrivacyStatement.from_dict`, which never guess between shapes.
"""

from __future__ import annotations

import grp
import json
import logging
import math
import os
import re
import shutil
import stat
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from opencity.errors import ConfigError, DataQualityError

log = logging.getLogger(__name__)

RESTRICTED_GROUP_ENV = "OPENCITY_RESTRICTED_GROUP"
_warned: set[str] = set()


def restricted_modes() -> tuple[int, int, int | None]:
    """(folder mode, file mode, group id or None) of restricted zones, from the settings."""
    group = os.environ.get(RESTRICTED_GROUP_ENV, "").strip()
    if not group:
        return 0o700, 0o600, None
    try:
        gid = int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
    except KeyError:
        raise ConfigError(f"{RESTRICTED_GROUP_ENV}={group!r}: no such group on this host; "
                          "set it to an existing group name or id, or unset it") from None
    return 0o750, 0o640, gid


def _secure(path: Path, mode: int, gid: int | None, *, created: bool) -> None:
    current = stat.S_IMODE(os.lstat(path).st_mode)
    if not created and current & ~mode:
        key = str(path)
        if key not in _warned:
            _warned.add(key)
            log.warning("restricted path %s was mode %04o (readable beyond its owner%s); "
                        "setting %04o", path, current, "'s group" if gid is not None else "",
                        mode)
    if gid is not None and os.lstat(path).st_gid != gid:
        os.chown(path, -1, gid)
    if current != mode:
        os.chmod(path, mode)


def _make_missing_dirs(path: Path, mode: int, secure: Callable[[Path], None]) -> bool:
    """Create ``path``'s missing folders (outermost first) with ``mode``, calling ``secure``
    on each folder this call created (the umask may have narrowed ``mode``). Returns whether
    any folder was missing."""
    missing = []
    p = path
    while not p.exists():
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        try:
            os.mkdir(d, mode)
        except FileExistsError:
            continue
        secure(d)
    return bool(missing)


def restricted_dir(path: str | Path) -> Path:
    """Create ``path`` (and missing parents) owner-only (0700, or 0750 with the group).

    An existing folder more open than that is tightened with a warning (once per process).
    """
    path = Path(path)
    dmode, _, gid = restricted_modes()
    created = _make_missing_dirs(path, dmode,
                                 lambda d: _secure(d, dmode, gid, created=True))
    if not created:
        if not path.is_dir():
            raise DataQualityError(f"{path}: expected a folder, found a file")
        _secure(path, dmode, gid, created=False)
    return path


def restricted_file(path: str | Path) -> Path:
    """Make an existing file owner-only (0600, or 0640 with the group)."""
    path = Path(path)
    _, fmode, gid = restricted_modes()
    _secure(path, fmode, gid, created=True)
    return path


def warn_if_open(path: str | Path) -> bool:
    """Warn once when a restricted input (e.g. a raw file we only read) is readable by others.

    Unlike :func:`check_restricted` nothing is changed: the file belongs to whoever landed it.
    Returns whether it is more open than the restricted modes.
    """
    path = Path(path)
    if not path.exists():
        return False
    dmode, fmode, _ = restricted_modes()
    current = stat.S_IMODE(path.stat().st_mode)
    too_open = bool(current & ~(dmode if path.is_dir() else fmode))
    if too_open and str(path) not in _warned:
        _warned.add(str(path))
        log.warning("restricted input %s is mode %04o: other accounts on this host can read "
                    "it; restrict it (chmod %04o) or set %s for a shared group", path,
                    current, dmode if path.is_dir() else fmode, RESTRICTED_GROUP_ENV)
    return too_open


def check_restricted(path: str | Path) -> None:
    """Warn once (and tighten) when a restricted folder or file is more open than allowed."""
    path = Path(path)
    if not path.exists():
        return
    dmode, fmode, gid = restricted_modes()
    _secure(path, dmode if path.is_dir() else fmode, gid, created=False)


PUBLISHED_ZONES = ("catalog",)  # the local catalog: what the portal publishes
INPUT_ZONES = ("raw",)  # the landing area belongs to whoever landed the files


def restrict_run_tree(run_dir: str | Path, *, include_inputs: bool = False) -> int:
    """Make everything of a run directory that is not published owner-only.

    Every top-level entry of ``run_dir`` except the published local catalog (and the raw
    landing area, unless ``include_inputs``: the demo generates its own) is a restricted
    zone: csv copies waiting for approval, validation reports on clean data, ``_runs``
    markers, manifests, outputs, staging, Airflow's home of the demo (``airflow.db``).
    Folders become 0700 and files 0600 (0750/0640 with ``OPENCITY_RESTRICTED_GROUP``),
    whatever the umask they were created under; symbolic links are left as they are.
    A run directory on object storage is not walked (each task's scratch copy is already
    private). Returns how many paths were tightened.
    """
    if "://" in str(run_dir):
        return 0
    root = Path(run_dir)
    if not root.is_dir():
        return 0
    dmode, fmode, gid = restricted_modes()
    skip = PUBLISHED_ZONES + (() if include_inputs else INPUT_ZONES)
    changed = 0

    uid = os.getuid()

    def tighten(path: Path, mode: int) -> None:
        nonlocal changed
        try:
            st = os.lstat(path)
            if st.st_uid != uid:  # another account's file: not ours to change
                return
            if gid is not None and st.st_gid != gid:
                os.chown(path, -1, gid)
            if stat.S_IMODE(st.st_mode) != mode:
                os.chmod(path, mode)
                changed += 1
        except FileNotFoundError:  # replaced meanwhile by a concurrent task
            return

    for top in sorted(root.iterdir()):
        if top.name in skip or top.is_symlink():
            continue
        if not top.is_dir():
            tighten(top, fmode)
            continue
        for dirpath, dirnames, filenames in os.walk(top):
            tighten(Path(dirpath), dmode)
            for name in filenames:
                f = Path(dirpath, name)
                if not f.is_symlink():
                    tighten(f, fmode)
            dirnames[:] = [d for d in dirnames if not Path(dirpath, d).is_symlink()]
    return changed


class TableSchema(Protocol):
    """What :func:`read_reference_csv` needs of a schema (e.g. a ``transforms.schemas.Schema``;
    this module imports no stage)."""

    @property
    def name(self) -> str: ...

    @property
    def names(self) -> list[str]: ...

    def arrow_schema(self) -> pa.Schema: ...


def read_reference_csv(path: str | Path, schema: TableSchema) -> pa.Table:
    """Read a public reference table (districts, towers, stops) with its typed schema."""
    path = Path(path)
    if not path.is_file():
        raise DataQualityError(f"{path}: reference file not found")
    arrow_schema = schema.arrow_schema()
    try:
        header = pacsv.read_csv(path, read_options=pacsv.ReadOptions(skip_rows_after_names=1 << 30))
        missing = [n for n in schema.names if n not in header.column_names]
        if missing:
            raise DataQualityError(f"{path}: missing column(s) {', '.join(missing)}")
        return pacsv.read_csv(
            path,
            convert_options=pacsv.ConvertOptions(
                column_types={f.name: f.type for f in arrow_schema},
                include_columns=schema.names,
            ),
        )
    except pa.ArrowInvalid as err:
        # Arrow quotes the offending value ('invalid value ...'): keep the message, not it.
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        first = re.sub(r"'[^']*'|\"[^\"]*\"", "'...'", first)[:200]
        raise DataQualityError(f"{path}: cannot read as {schema.name} ({first})") from None


def is_staging(path: str | Path) -> bool:
    """Whether ``path`` lies in a staging folder (``.<partition>.staging``): a restricted zone."""
    return any(part.endswith(".staging") for part in Path(path).parts)


PUBLIC_DIR_MODE = 0o755  # the published catalog: world-readable, written by its owner only
PUBLIC_FILE_MODE = 0o644


def _parent(target: Path, restricted: bool, public: bool = False) -> bool:
    restricted = restricted or is_staging(target)
    if restricted and public:
        raise ConfigError(f"{target}: a file is either restricted or public, not both; "
                          "this is a bug in the caller")
    if restricted:
        restricted_dir(target.parent)
    elif public:
        public_dir(target.parent)
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
    return restricted


def public_dir(path: str | Path) -> Path:
    """Create ``path`` (and missing parents) world-readable (0755) whatever the umask.

    Folders that exist already are left as they are (the operator may have chosen them).
    """
    path = Path(path)
    _make_missing_dirs(path, PUBLIC_DIR_MODE, lambda d: os.chmod(d, PUBLIC_DIR_MODE))
    return path


def public_tree(root: str | Path) -> Path:
    """Make a folder written for the public catalog world-readable: folders 0755, files
    0644 (symbolic links are left as they are), whatever the umask they were written under."""
    root = Path(root)
    for dirpath, dirnames, filenames in os.walk(root):
        os.chmod(dirpath, PUBLIC_DIR_MODE)
        for name in filenames:
            f = Path(dirpath, name)
            if not f.is_symlink():
                os.chmod(f, PUBLIC_FILE_MODE)
        dirnames[:] = [d for d in dirnames if not Path(dirpath, d).is_symlink()]
    return root


def fsync_dir(path: str | Path) -> None:
    """Flush a folder's entries (a rename or a new file in it) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(target: str | Path, write: Callable[[Path], object], *,
                 restricted: bool = False, public: bool = False) -> Path:
    """The one atomic write; every file someone else reads is written through it.

    ``write(tmp)`` writes the content to a temporary name next to ``target`` (any writer:
    Arrow, DuckDB ``COPY``, text); the file is flushed to disk (fsync), given its zone's mode
    and renamed over ``target`` in one step, and the folder is flushed too. A reader sees the
    old file or the new one, never a half-written one; a retry overwrites.

    Zones: ``restricted=True`` (implied inside a staging folder): the folder is a restricted
    zone and the file owner-only (0600, or 0640 with ``OPENCITY_RESTRICTED_GROUP``);
    ``public=True`` (the published catalog): 0644 in folders created 0755, whatever the
    umask; neither: the process umask decides (e.g. a file the user asked for by path).
    """
    target = Path(target)
    restricted = _parent(target, restricted, public)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    try:
        write(tmp)
        _fsync_file(tmp)
        if restricted:
            restricted_file(tmp)
        elif public:
            os.chmod(tmp, PUBLIC_FILE_MODE)
        os.replace(tmp, target)
        fsync_dir(target.parent)
    finally:
        if tmp.exists():
            tmp.unlink()
    return target


def write_text_atomic(text: str, target: str | Path, *, restricted: bool = False,
                      public: bool = False) -> Path:
    """Write UTF-8 ``text`` to ``target`` atomically, with its zone's modes
    (see :func:`write_atomic`)."""
    return write_atomic(target, lambda tmp: tmp.write_text(text, encoding="utf-8"),
                        restricted=restricted, public=public)


def write_json_atomic(data: object, target: str | Path, *, restricted: bool = False,
                      public: bool = False, **dumps: object) -> Path:
    """Write ``data`` as JSON (``json.dumps`` options in ``dumps``; default ``indent=2``)
    atomically, with its zone's modes (see :func:`write_atomic`)."""
    dumps.setdefault("indent", 2)
    return write_text_atomic(json.dumps(data, **dumps), target, restricted=restricted,
                             public=public)


def write_parquet_atomic(table: pa.Table, target: str | Path, *, restricted: bool = False,
                         public: bool = False) -> Path:
    """Write ``table`` to ``target`` through a temporary name (a retry overwrites).

    ``restricted=True`` (implied inside a staging folder): the folder is a restricted zone
    and the file is created owner-only.
    """
    return write_atomic(target, lambda tmp: pq.write_table(table, tmp, compression="zstd"),
                        restricted=restricted, public=public)


def write_bytes_atomic(content: bytes, target: str | Path, *, restricted: bool = False,
                       public: bool = False) -> Path:
    """Write ``content`` to ``target`` through a temporary name (see :func:`write_atomic`)."""
    return write_atomic(target, lambda tmp: tmp.write_bytes(content), restricted=restricted,
                        public=public)


def write_csv_atomic(table: pa.Table, target: str | Path, *, restricted: bool = False,
                     public: bool = False) -> Path:
    """Write ``table`` as CSV through a temporary name (see :func:`write_atomic`)."""
    return write_atomic(target, lambda tmp: pacsv.write_csv(table, tmp), restricted=restricted,
                        public=public)


def replace_dir(staging: Path, final: Path) -> Path:
    """Move a fully written staging directory into place, replacing any previous one."""
    final.parent.mkdir(parents=True, exist_ok=True)
    old = final.with_name(f".{final.name}.{uuid.uuid4().hex}.old")
    if final.exists():
        os.replace(final, old)
    os.replace(staging, final)
    fsync_dir(final.parent)
    if old.exists():
        shutil.rmtree(old)
    return final


def rename_dir(staging: str | Path, final: str | Path) -> Path:
    """Give a fully written (and fsynced) folder its final name in one step; ``final`` must
    not exist (e.g. a new immutable catalog snapshot). The parent folder is flushed."""
    staging, final = Path(staging), Path(final)
    if final.exists():
        raise FileExistsError(f"{final} exists already; this is a bug (a new name is unique)")
    os.rename(staging, final)
    fsync_dir(final.parent)
    return final


def replace_symlink(link: str | Path, points_to: str | Path) -> Path:
    """Point ``link`` at ``points_to`` in one atomic step (a reader sees the old or the new
    target, never no link), e.g. a catalog's ``current`` snapshot pointer."""
    link = Path(link)
    tmp = link.with_name(f".{link.name}.{uuid.uuid4().hex}.tmp")
    os.symlink(points_to, tmp)
    try:
        os.replace(tmp, link)
    finally:
        if tmp.is_symlink():
            tmp.unlink()
    fsync_dir(link.parent)
    return link


def move_aside(path: str | Path) -> Path:
    """Rename ``path`` to a hidden ``.<name>.<id>.old`` next to it (a leftover the next
    cleanup removes) and return the new name."""
    path = Path(path)
    aside = path.with_name(f".{path.name}.{uuid.uuid4().hex}.old")
    os.rename(path, aside)
    return aside


@contextmanager
def staged_dir(final: str | Path) -> Iterator[Path]:
    """Write a folder's files together or not at all.

    Yields a fresh hidden folder next to ``final`` (``.<name>.<id>.tmp``, a leftover that
    ``publish.leftovers`` removes); when the block succeeds, entries of an existing
    ``final`` the block did not write are carried over (hard links) and the folder replaces
    ``final`` in one rename (:func:`replace_dir`). When the block raises (or the process is
    killed) ``final`` is left as it was: a reader never sees some new files without the
    others (e.g. data files without their ``privacy.json``).
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = final.with_name(f".{final.name}.{uuid.uuid4().hex}.tmp")
    staging.mkdir()
    try:
        yield staging
        if final.is_dir():
            for old in final.rglob("*"):
                new = staging / old.relative_to(final)
                if new.exists() or new.is_symlink():
                    continue
                if old.is_dir() and not old.is_symlink():
                    new.mkdir(parents=True, exist_ok=True)
                    shutil.copystat(old, new)
                else:
                    new.parent.mkdir(parents=True, exist_ok=True)
                    try:
                        os.link(old, new, follow_symlinks=False)
                    except OSError:
                        shutil.copy2(old, new, follow_symlinks=False)
        replace_dir(staging, final)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


@contextmanager
def discard_on_failure(staging: Path) -> Iterator[None]:
    """Delete a staged (not yet committed) output when the block raises.

    A product that failed its release checks must not linger in the run directory: it may
    hold exactly what the checks caught (e.g. an identifier). It is derived data, so a rerun
    rebuilds it.
    """
    try:
        yield
    except Exception:
        shutil.rmtree(staging, ignore_errors=True)
        raise


# ------------------------------------------------------------------ the privacy statement
STATEMENT_FILE = "privacy.json"
STATEMENT_VERSION = 1
_PARTITION = re.compile(r"dt=\d{4}-\d{2}-\d{2}")
#: Keys of the JSON form that the statement owns (a producer's ``details`` may not use them).
_REQUIRED_KEYS = ("statement_version", "dataset", "partition", "privacy_method",
                  "spent_per_unit")
_OPTIONAL_KEYS = ("products", "policy_hash", "release_id")
#: Legacy keys derived from ``spent`` when there is exactly one privacy unit.
_LEGACY_KEYS = ("privacy_unit", "epsilon", "delta", "spent")
_RESERVED_KEYS = frozenset(_REQUIRED_KEYS + _OPTIONAL_KEYS + _LEGACY_KEYS)


def _budget_number(value: Any, what: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DataQualityError(f"{where}: {what} must be a number, got "
                               f"{type(value).__name__}")
    number = float(value)
    if not math.isfinite(number) or number < 0:
        raise DataQualityError(f"{where}: {what} must be a finite number >= 0, got {number!r}")
    return number


@dataclass(frozen=True)
class PrivacyStatement:
    """The privacy statement of one DP release: what was spent, per privacy unit, and how.

    Written once per release (``privacy.json`` next to the products, the ledger's artefact)
    and read by the release gate, the privacy officer's review and the catalog metadata.

    Attributes:
        dataset: the release policy's dataset (= catalog name).
        partition: ``dt=YYYY-MM-DD`` (the day, the week's Monday, or the month's first day).
        method: ``differential_privacy``.
        spent: privacy unit -> ``{"epsilon": e, "delta": d}`` spent by this release per
            person of that unit (the ledger's spend), every product together.
        products: product (table or statistic) -> its parameters (``mechanism``,
            ``epsilon``, ``delta``, ``statistic``, ``bounds``, ``selection_threshold``,
            ``key_source``, ``file``, ...).
        details: the producer's own fields (granularity, releases, budget, ledger entry, ...);
            none may use a key the statement owns.
        policy_hash: hash of the release policy the spend was checked against.
        release_id: the ledger's release id, when the producer names one.
    """

    dataset: str
    partition: str
    method: str
    spent: Mapping[str, Mapping[str, float]]
    products: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    details: Mapping[str, Any] = field(default_factory=dict)
    policy_hash: str | None = None
    release_id: str | None = None

    def __post_init__(self) -> None:
        where = f"privacy statement of {self.dataset!r}"
        for name in ("dataset", "method"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise DataQualityError(f"{where}: {name} must be a non-empty string, got "
                                       f"{value!r}")
        if not isinstance(self.partition, str) or not _PARTITION.fullmatch(self.partition):
            raise DataQualityError(f"{where}: partition must be 'dt=YYYY-MM-DD', got "
                                   f"{self.partition!r}")
        if not isinstance(self.spent, Mapping) or not self.spent:
            raise DataQualityError(f"{where}: spent must name at least one privacy unit "
                                   "with its epsilon and delta")
        spent: dict[str, dict[str, float]] = {}
        for unit, cost in self.spent.items():
            if not isinstance(unit, str) or not unit:
                raise DataQualityError(f"{where}: a privacy unit must be a non-empty string, "
                                       f"got {unit!r}")
            if not isinstance(cost, Mapping):
                raise DataQualityError(f"{where}: spent[{unit!r}] must be "
                                       "{'epsilon': e, 'delta': d}")
            for key in ("epsilon", "delta"):
                if key not in cost:
                    raise DataQualityError(f"{where}: spent[{unit!r}] has no {key!r}")
            spent[unit] = {k: _budget_number(cost[k], f"spent[{unit!r}].{k}", where)
                           for k in ("epsilon", "delta")}
        if not isinstance(self.products, Mapping) or not all(
                isinstance(v, Mapping) for v in self.products.values()):
            raise DataQualityError(f"{where}: products must map each product to its "
                                   "parameters")
        if not isinstance(self.details, Mapping):
            raise DataQualityError(f"{where}: details must be a mapping")
        taken = sorted(_RESERVED_KEYS & set(self.details))
        if taken:
            raise DataQualityError(f"{where}: details use the statement's own key(s) {taken}; "
                                   "this is a bug in the producer")
        for name in ("policy_hash", "release_id"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise DataQualityError(f"{where}: {name} must be a string or None, got "
                                       f"{type(value).__name__}")
        object.__setattr__(self, "spent", spent)
        object.__setattr__(self, "products", {str(k): dict(v)
                                              for k, v in self.products.items()})
        object.__setattr__(self, "details", dict(self.details))

    @property
    def units(self) -> tuple[str, ...]:
        """The privacy units this release spent for, sorted."""
        return tuple(sorted(self.spent))

    def _only_unit(self, what: str) -> Mapping[str, float]:
        if len(self.spent) != 1:
            raise DataQualityError(
                f"privacy statement of {self.dataset} {self.partition} spends for "
                f"{len(self.spent)} privacy units ({', '.join(self.units)}): there is no "
                f"single {what}; read spent[unit] for each unit")
        return next(iter(self.spent.values()))

    @property
    def epsilon(self) -> float:
        """Epsilon per person of the only privacy unit (DataQualityError when several:
        budgets of different units do not add up; use ``spent[unit]``)."""
        return self._only_unit("epsilon")["epsilon"]

    @property
    def delta(self) -> float:
        """Delta per person of the only privacy unit (DataQualityError when several)."""
        return self._only_unit("delta")["delta"]

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (``privacy.json``): the producer's details, the statement's keys
        and, with one privacy unit, the legacy keys ``privacy_unit``, ``epsilon``, ``delta``
        and ``spent`` ({epsilon, delta}) that readers of earlier statements know."""
        doc: dict[str, Any] = dict(self.details)
        doc.update({
            "statement_version": STATEMENT_VERSION,
            "dataset": self.dataset,
            "partition": self.partition,
            "privacy_method": self.method,
            "spent_per_unit": {u: dict(c) for u, c in self.spent.items()},
            "products": {p: dict(m) for p, m in self.products.items()},
            "policy_hash": self.policy_hash,
            "release_id": self.release_id,
        })
        if len(self.spent) == 1:
            unit, cost = next(iter(self.spent.items()))
            doc.update({"privacy_unit": unit, "epsilon": cost["epsilon"],
                        "delta": cost["delta"], "spent": dict(cost)})
        return doc

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *,
                  where: str = "privacy statement") -> PrivacyStatement:
        """Read the JSON form strictly; never guesses between shapes.

        Raises:
            DataQualityError: ``data`` is not a statement (a required key is missing, the
                version is unknown, a value has the wrong type, or a legacy key contradicts
                ``spent_per_unit``); the message names ``where`` and the key.
        """
        if not isinstance(data, Mapping):
            raise DataQualityError(f"{where}: a privacy statement must be a JSON object, got "
                                   f"{type(data).__name__}")
        for key in _REQUIRED_KEYS:
            if key not in data:
                raise DataQualityError(
                    f"{where}: not a privacy statement (missing key {key!r}); rewrite it with "
                    "the release step that produced it (opencity.io.write_statement)")
        version = data["statement_version"]
        if isinstance(version, bool) or version != STATEMENT_VERSION:
            raise DataQualityError(f"{where}: statement_version {version!r} is not supported "
                                   f"(this version reads {STATEMENT_VERSION})")
        try:
            statement = cls(
                dataset=data["dataset"], partition=data["partition"],
                method=data["privacy_method"], spent=data["spent_per_unit"],
                products=data.get("products") or {},
                details={k: v for k, v in data.items() if k not in _RESERVED_KEYS},
                policy_hash=data.get("policy_hash"), release_id=data.get("release_id"))
        except DataQualityError as err:
            raise DataQualityError(f"{where}: {err}") from None
        if len(statement.spent) == 1:
            legacy = {k: data[k] for k in _LEGACY_KEYS if k in data}
            want = {k: v for k, v in statement.to_dict().items() if k in legacy}
            if legacy != want:
                bad = sorted(k for k in legacy if legacy[k] != want[k])
                raise DataQualityError(f"{where}: key(s) {bad} contradict spent_per_unit")
        return statement

    def to_bytes(self) -> bytes:
        """Sorted-key, indented JSON with a final newline (what ledger artefacts store)."""
        return (json.dumps(self.to_dict(), indent=2, sort_keys=True, default=str)
                + "\n").encode("utf-8")


def write_statement(statement: PrivacyStatement, path: str | Path) -> Path:
    """Write ``statement`` to ``path`` atomically, owner-only (a restricted zone: staging
    or outputs before publication; the catalog copy is made by publish/)."""
    return write_bytes_atomic(statement.to_bytes(), path, restricted=True)


def read_statement(path: str | Path) -> PrivacyStatement | None:
    """The statement at ``path``; None when the file is missing.

    Raises:
        DataQualityError: the file is not valid JSON or not a privacy statement.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as err:
        raise DataQualityError(f"privacy statement {path}: cannot read it "
                               f"({err.strerror or type(err).__name__})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise DataQualityError(f"privacy statement {path} is not valid JSON (line "
                               f"{err.lineno}, column {err.colno}); rewrite it with the "
                               "release step that produced it") from None
    return PrivacyStatement.from_dict(data, where=f"privacy statement {path}")
