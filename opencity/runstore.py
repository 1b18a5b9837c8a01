"""Run directories on object storage: every task works in a private scratch copy.

``run_dir`` (``OPENCITY_RUN_DIR`` or the DAG param) and ``raw_dir`` may be fsspec URLs, e.g.
``s3://opencity-runs/city`` on MinIO or AWS S3, instead of local paths. Then no two tasks need
to share a disk: each Airflow task

1. pulls the run tree (and the raw inputs) from the store into a fresh owner-only scratch
   directory on its worker (``TMPDIR``),
2. runs its body there, unchanged (the stage packages keep reading and writing local files),
3. pushes back what it created or changed, deletes what it removed, and
4. removes the scratch directory, success or failure: no restricted clean data stays on the
   worker's disk.

A task that fails pushes nothing: its partial files never reach the store, and its retry
starts from what the store holds. Tasks hand each other URIs through XCom (``s3://...``):
local scratch paths in a return value become URIs of the store, URIs in arguments become
paths of the scratch copy. Text files a task writes (JSON, HTML, Markdown) name the store's
URIs as well, never a scratch path that no other worker has.

The store is reached with the credentials of its fsspec driver: for S3, the standard AWS
variables (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL`` for MinIO
or another S3-compatible server), never a DAG param. Object storage is for several machines,
so the portal's state (budget ledger, release registry) must then be PostgreSQL
(``OPENCITY_STATE_URL=postgresql://...``), and the publish target CKAN: a SQLite file or a
local catalog would be one more copy per worker.

Each task copies the whole run tree: right for the weekly and daily partitions of a city
(megabytes); a per-task list of inputs is the step after this one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from opencity.errors import ConfigError, StorageError

log = logging.getLogger(__name__)

# Files whose text may name the run directory (reports, manifests, package metadata).
_TEXT_SUFFIXES = (".json", ".html", ".md", ".txt", ".yaml", ".yml")


def is_remote(location: str | None) -> bool:
    """Whether ``location`` is an object-storage URL (``scheme://``, not ``file://``)."""
    return bool(location) and "://" in str(location) and not str(location).startswith("file://")


def join(location: str, *parts: str) -> str:
    """``location`` / parts, for a local path or a URL (pathlib would fold ``s3://``)."""
    if is_remote(location):
        return "/".join([str(location).rstrip("/"), *(p.strip("/") for p in parts)])
    return str(Path(location, *parts))


def _fs(url: str):
    try:
        from fsspec.core import url_to_fs
    except ImportError as err:  # pragma: no cover - fsspec ships with Airflow
        raise ConfigError("object storage needs fsspec (pip install 'opencity[production]')"
                          ) from err
    try:
        return url_to_fs(url)
    except (ImportError, ValueError) as err:
        scheme = url.split("://", 1)[0]
        raise ConfigError(f"no fsspec driver for {scheme}:// run directories ({err}); for S3 "
                          "install opencity[production] (s3fs)") from None


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _unreachable(url: str, action: str, err: BaseException) -> StorageError:
    # The driver's message may carry a key of the store (a file name), never row content.
    return StorageError(
        f"cannot {action} the run storage {url} from this worker ({type(err).__name__}: "
        f"{str(err)[:200]}); check that the object store answers at its endpoint "
        "(AWS_ENDPOINT_URL) and that AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY are set")


def pull(url: str, local: Path, skip: Callable[[str], bool] | None = None) -> dict[str, str]:
    """Copy every object under ``url`` to ``local``; the digests of what was copied.

    ``skip(relative_key)`` true: that object is not copied (e.g. raw inputs a reader does
    not need)."""
    fs, root = _fs(url)
    root = root.rstrip("/")
    try:
        found = fs.find(root, withdirs=False)
    except FileNotFoundError:
        found = []
    except Exception as err:
        raise _unreachable(url, "read", err) from err
    local.mkdir(parents=True, exist_ok=True)
    rels = [f[len(root):].lstrip("/") for f in found]
    rels = [r for r in rels if r and not r.endswith("/") and not (skip and skip(r))]
    if rels:
        targets = [str(local / r) for r in rels]
        for t in targets:
            Path(t).parent.mkdir(parents=True, exist_ok=True)
        try:
            fs.get([f"{root}/{r}" for r in rels], targets)
        except Exception as err:
            raise _unreachable(url, "read", err) from err
    return {r: _digest(local / r) for r in rels}


def _rewrite(data: bytes, replacements: list[tuple[str, str]]) -> bytes:
    try:
        return _map(data.decode("utf-8"), replacements).encode("utf-8")
    except UnicodeDecodeError:
        return data


def push(local: Path, url: str, pulled: dict[str, str],
         replacements: list[tuple[str, str]]) -> dict[str, int]:
    """Upload what is new or changed under ``local`` since :func:`pull`, delete what the task
    removed. Text files get the scratch paths replaced by URIs first."""
    fs, root = _fs(url)
    root = root.rstrip("/")
    now: dict[str, Path] = {}
    for p in sorted(local.rglob("*")):
        if p.is_symlink():
            raise ConfigError(f"a task left a symbolic link ({p.relative_to(local)}) in a run "
                              "directory on object storage; object stores hold no links")
        if p.is_file():
            now[p.relative_to(local).as_posix()] = p
    changed = [r for r, p in now.items() if r not in pulled or pulled[r] != _digest(p)]
    removed = sorted(set(pulled) - set(now))
    try:
        for rel in changed:
            data = now[rel].read_bytes()
            if now[rel].suffix in _TEXT_SUFFIXES:
                data = _rewrite(data, replacements)
            fs.pipe_file(f"{root}/{rel}", data)
        if removed:
            fs.rm([f"{root}/{r}" for r in removed])
    except Exception as err:
        raise _unreachable(url, "write", err) from err
    return {"uploaded": len(changed), "deleted": len(removed)}


@dataclasses.dataclass
class Scratch:
    """One task's scratch copy: the local settings and the path <-> URI mapping."""

    settings: Any  # opencity.settings.Settings with local run_dir / raw_dir
    mapping: list[tuple[str, str]]  # (URI, local path) of the run and raw roots

    def to_local(self, value: Any) -> Any:
        """URIs of the store in an XCom value -> paths of this scratch copy."""
        return _map(value, self.mapping)

    def to_uris(self, value: Any) -> Any:
        """Paths of this scratch copy in a return value -> URIs of the store."""
        return _map(value, [(p, u) for u, p in self.mapping])


_END = r"(?=/|$|[\s`'\")\],;])"


def _map(value: Any, pairs: list[tuple[str, str]], end: str = _END) -> Any:
    """Every occurrence of a root (as a whole path component) replaced, in nested values."""
    if isinstance(value, str):
        for old, new in pairs:
            if is_remote(new) and not is_remote(old):
                # a file:// link to a scratch path becomes the store's URL, not file://s3://
                value = re.sub(re.escape("file://" + old.rstrip("/")) + end,
                               new.rstrip("/").replace("\\", "\\\\"), value)
            value = re.sub(re.escape(old.rstrip("/")) + end,
                           new.rstrip("/").replace("\\", "\\\\"), value)
        return value
    if isinstance(value, dict):
        return {k: _map(v, pairs, end) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_map(v, pairs, end) for v in value)
    return value


def check_remote_settings(settings: Any) -> None:
    """A run directory on object storage needs shared state and a shared publish target."""
    if not is_remote(settings.run_dir):
        return  # raw inputs alone on object storage: read into each task's scratch copy
    if settings.publish_target != "ckan":
        raise ConfigError(
            f"the run directory {settings.run_dir} is on object storage but the publish "
            "target is the local catalog, a directory of one machine; publish to CKAN "
            "(OPENCITY_PUBLISH_TARGET=ckan) or use a local run directory")
    if not str(settings.state_url).startswith(("postgresql://", "postgres://")):
        raise ConfigError(
            f"the run directory {settings.run_dir} is on object storage but the portal's "
            "state (budget ledger, release registry) is a SQLite file, one per worker; set "
            "OPENCITY_STATE_URL=postgresql://... for every worker")


@contextlib.contextmanager
def scratch(settings: Any) -> Iterator[Scratch]:
    """The task's view of the run: ``settings`` itself for a local run directory; for one on
    object storage a scratch copy, pushed back when the body succeeds, always removed."""
    remote_run, remote_raw = is_remote(settings.run_dir), is_remote(settings.raw_dir)
    if not remote_run and not remote_raw:
        yield Scratch(settings, [])
        return
    check_remote_settings(settings)
    base = Path(tempfile.mkdtemp(prefix="opencity-task-"))  # mode 0700
    try:
        run_url, raw_url = settings.run_dir.rstrip("/"), settings.raw_dir.rstrip("/")
        run_local, raw_local = Path(settings.run_dir), Path(settings.raw_dir)
        mapping: list[tuple[str, str]] = []
        pulled: dict[str, str] = {}
        if remote_run:
            run_local = base / "run"
            pulled = pull(run_url, run_local)
            mapping.append((run_url, str(run_local)))
        if remote_run and raw_url.startswith(run_url + "/"):  # raw inside the run tree
            raw_local = run_local / raw_url[len(run_url) + 1:]
        elif remote_raw:
            raw_local = base / "raw"
            pull(raw_url, raw_local)  # read only: never pushed
            mapping.append((raw_url, str(raw_local)))
        local = dataclasses.replace(settings, run_dir=str(run_local), raw_dir=str(raw_local))
        yield Scratch(local, mapping)
        if remote_run:
            stats = push(run_local, settings.run_dir, pulled,
                         [(p, u) for u, p in mapping])
            log.info("run storage %s: %d file(s) uploaded, %d deleted", settings.run_dir,
                     stats["uploaded"], stats["deleted"])
    finally:
        shutil.rmtree(base, ignore_errors=True)


# --- Commands that read a run directory (opencity report|budget|approvals) ------------------
def location(text: str) -> Path | str:
    """``argparse`` type of a run directory: an object-storage URL as it is (no trailing
    slash), a local path made absolute (``~`` expanded)."""
    text = str(text).strip()
    if is_remote(text):
        return text.rstrip("/")
    return Path(os.path.abspath(os.path.expanduser(text)))


def read_text(location: str | Path, name: str) -> str | None:
    """The text of ``location/name`` (a URL or a local folder); None when it does not
    exist. A run directory that does not exist is a ConfigError naming it."""
    if not is_remote(location):
        if not Path(location).is_dir():
            raise ConfigError(f"run directory {location} does not exist")
        f = Path(location, name)
        return f.read_text(encoding="utf-8") if f.is_file() else None
    fs, root = _fs(str(location))
    root = root.rstrip("/")
    try:
        if not fs.exists(root):
            raise ConfigError(f"run directory {location} does not exist (nothing under that "
                              "prefix of the object store)")
        return fs.cat_file(f"{root}/{name}").decode("utf-8")
    except FileNotFoundError:
        return None
    except ConfigError:
        raise
    except Exception as err:
        raise _unreachable(str(location), "read", err) from err


def _reader_skips(rel: str) -> bool:
    # A reader of a run needs its outputs, reports, catalog and the city's reference tables,
    # never the raw personal inputs (raw/ other than raw/city/) or clean partitions.
    top = rel.split("/", 1)[0]
    return (top == "raw" and not rel.startswith("raw/city/")) or top in ("clean",
                                                                           "quarantine")


@contextlib.contextmanager
def read_copy(location: str | Path) -> Iterator[tuple[Path, Callable[[Any], Any]]]:
    """A local view of a run directory for a command that only reads it.

    Yields ``(folder, to_uris)``: a local run directory as it is (``to_uris`` the identity);
    one on object storage pulled (without raw inputs and clean data) into a fresh
    owner-only temporary folder, removed afterwards, with ``to_uris`` mapping its paths in
    values and texts back to the store's URIs."""
    if not is_remote(location):
        if not Path(location).is_dir():
            raise ConfigError(f"run directory {location} does not exist")
        yield Path(location), lambda v: v
        return
    url = str(location).rstrip("/")
    read_text(url, "state.url")  # a missing prefix: a clear error before any copy
    base = Path(tempfile.mkdtemp(prefix="opencity-read-"))  # mode 0700
    try:
        local = base / "run"
        pull(url, local, skip=_reader_skips)
        roots = dict.fromkeys([str(local.resolve()), str(local)])
        # file:// links first: a link to the copy becomes the store's URL, not file://s3://
        pairs = [(f"file://{r}", url) for r in roots] + [(r, url) for r in roots]
        # any character that cannot continue a path ends it (HTML: ``...run</code>``)
        yield local, lambda v: _map(v, pairs, r"(?![\w.-])")
    finally:
        shutil.rmtree(base, ignore_errors=True)


def uris_in_texts(folder: Path, to_uris: Callable[[Any], Any]) -> None:
    """Rewrite the text files under ``folder`` (reports written from a :func:`read_copy`)
    so they name the store's URIs, never a temporary path that is gone."""
    for p in folder.rglob("*"):
        if p.is_file() and p.suffix in _TEXT_SUFFIXES:
            text = p.read_text(encoding="utf-8")
            new = to_uris(text)
            if new != text:
                p.write_text(new, encoding="utf-8")
