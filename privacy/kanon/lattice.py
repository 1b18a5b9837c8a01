"""Vectorized lattice search for the optimal full-domain generalization.

Data layout: every record is reduced to one int64 *cell key*: the leaf index of each
quasi-identifier in mixed radix (radix = number of hierarchy leaves), times the number of
sensitive values, plus the sensitive value's code. The input collapses to the sorted
distinct cell keys with their record counts (one numpy ``unique``), so later work never
touches records again.

A lattice node is a tuple of generalization levels. Its cells are computed by *rolling up*
the cells of a direct predecessor (one level lower in one attribute): the digit of that
attribute is mapped through the hierarchy (an array lookup) and equal keys are summed
(``np.unique`` + ``np.bincount``). Classes are runs of equal ``key // m``.

Search: nodes are visited bottom-up by total level (then lexicographically). For every
metric a lower bound that is monotone under generalization is known (ARX's bounds: the
generalization-only part of loss/entropy/precision, DM* for discernibility, |D|/#classes
for AECS); when a node's bound exceeds the best loss found, the node and all its
successors are skipped. Ties are broken like ARX: lower total level first, then the
lexicographically smaller node (ARX leaves that last tie to its traversal order).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from opencity.errors import ConfigError, InternalError
from privacy.kanon.hierarchy import Hierarchy

METRICS: tuple[str, ...] = ("nu-entropy", "loss", "discernibility", "aecs", "precision")
# ARX's monotonic non-uniform entropy (MetricMDNUEntropy: suppression not counted); API only,
# used to compare with ARX's published test cases.
EXTRA_METRICS: tuple[str, ...] = ("nu-entropy-monotonic",)
_DIGITS = 1e10  # ARX rounds multi-dimensional losses down to 10 decimals


def _round(x: float) -> float:
    return math.floor(x * _DIGITS) / _DIGITS


@dataclass
class Criteria:
    """Resolved privacy predicate on equivalence classes (internal)."""

    k: int
    max_outliers: int  # floor(max_suppression * rows), ARX's absolute limit
    l: float | None = None
    l_variant: str | None = None
    c: float | None = None
    t: float | None = None
    t_ordered: bool = False


@dataclass
class Problem:
    """Encoded input: cells, hierarchies and per-attribute statistics."""

    hierarchies: list[Hierarchy]
    rows: int
    cell_keys: np.ndarray  # sorted unique int64 cell keys at level 0
    cell_counts: np.ndarray  # int64 record counts per cell
    leaf_counts: list[np.ndarray]  # per QI: records per leaf
    m: int  # number of sensitive codes (1 if no sensitive attribute)
    q: np.ndarray | None  # global sensitive distribution (by code)
    radix: np.ndarray = field(init=False)
    strides: np.ndarray = field(init=False)  # cell-key stride per QI (includes m)
    heights: np.ndarray = field(init=False)
    _up: dict = field(init=False, default_factory=dict)
    _gen_entropy: dict = field(init=False, default_factory=dict)
    _shares: dict = field(init=False, default_factory=dict)
    _bounds: dict = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.radix = np.array([len(h.leaves) for h in self.hierarchies], dtype=np.int64)
        self.heights = np.array([h.height for h in self.hierarchies], dtype=np.int64)
        self.strides = strides_for(self.radix, self.m)

    @property
    def dims(self) -> int:
        return len(self.hierarchies)

    def up(self, j: int, src: int, dst: int) -> np.ndarray:
        key = (j, src, dst)
        if key not in self._up:
            self._up[key] = self.hierarchies[j].up_map(src, dst)
        return self._up[key]

    def gen_entropy(self, j: int, level: int) -> float:
        """ARX's raw (negative) non-uniform entropy of attribute j at level (all records)."""
        key = (j, level)
        if key not in self._gen_entropy:
            a = self.leaf_counts[j].astype(np.float64)
            codes = self.hierarchies[j].leaf_codes(level)
            b = np.bincount(codes, weights=a)[codes]
            nz = a > 0
            self._gen_entropy[key] = float(np.sum(a[nz] * np.log2(a[nz] / b[nz])))
        return self._gen_entropy[key]

    def bound_part(self, metric: str, j: int, level: int) -> float:
        """Per-QI term of the class-independent lower bound (cached)."""
        key = (metric, j, level)
        if key not in self._bounds:
            if metric == "precision":
                h = int(self.heights[j])
                value = (0.0 if h == 0 else level / h) / self.dims
            elif metric == "nu-entropy":
                raw = self.gen_entropy(j, level)
                value = _round(-raw if raw != 0.0 else 0.0)
            else:  # loss: every record generalized, nothing suppressed
                share = self.shares(j, level)
                codes = self.hierarchies[j].leaf_codes(level)
                x = float(np.sum(self.leaf_counts[j] * share[codes]))
                value = _normalize_loss(x, float(self.rows), int(self.radix[j]))
            self._bounds[key] = value
        return self._bounds[key]

    def shares(self, j: int, level: int) -> np.ndarray:
        """ARX domain share of every code at level: leaves below it / all leaves."""
        key = (j, level)
        if key not in self._shares:
            codes = self.hierarchies[j].leaf_codes(level)
            self._shares[key] = np.bincount(codes).astype(np.float64) / len(codes)
        return self._shares[key]


def strides_for(radix: np.ndarray, m: int) -> np.ndarray:
    """Mixed-radix strides (last QI fastest), scaled by the sensitive radix m."""
    total = 1
    out = np.empty(len(radix), dtype=np.int64)
    for j in range(len(radix) - 1, -1, -1):
        out[j] = total * m
        total *= int(radix[j])
    if total * m >= 2**62:
        raise ConfigError(
            "too many possible quasi-identifier combinations to index "
            f"({total * m:.3g}); use fewer quasi-identifiers or hierarchies with fewer leaves"
        )
    return out


def build_problem(leaf_codes: Sequence[np.ndarray], hierarchies: Sequence[Hierarchy],
                  sens_codes: np.ndarray | None, m: int) -> Problem:
    """Collapse per-record leaf codes (and sensitive codes) into counted cells."""
    radix = np.array([len(h.leaves) for h in hierarchies], dtype=np.int64)
    strides = strides_for(radix, max(m, 1))
    n = len(leaf_codes[0])
    key = np.zeros(n, dtype=np.int64)
    for codes, stride in zip(leaf_codes, strides, strict=True):
        key += codes * stride
    if sens_codes is not None:
        key += sens_codes
    keys, counts = np.unique(key, return_counts=True)
    counts = counts.astype(np.int32 if n < 2**31 else np.int64)  # 12 bytes per cell
    leaf_counts = [np.bincount(c, minlength=r) for c, r in zip(leaf_codes, radix, strict=True)]
    q = None
    if sens_codes is not None:
        q = np.bincount(sens_codes, minlength=m).astype(np.float64) / n
    return Problem(list(hierarchies), n, keys, counts, leaf_counts,
                   max(m, 1), q)


def rollup(p: Problem, keys: np.ndarray, counts: np.ndarray, src: Sequence[int],
           dst: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Cells of node ``dst`` from the cells of a finer node ``src`` (componentwise <=)."""
    new = keys
    for j in range(p.dims):
        if dst[j] != src[j]:
            code = (keys // p.strides[j]) % p.radix[j]
            new = new + (p.up(j, src[j], dst[j])[code] - code) * p.strides[j]
    if new is keys:
        return keys, counts
    # Stable sort: the parent's keys are sorted and one digit changed, so the keys are
    # nearly sorted in runs and timsort is fast on them.
    order = np.argsort(new, kind="stable")
    new = new[order]
    starts = _run_starts(new)
    return new[starts], np.add.reduceat(counts[order], starts)


def _run_starts(sorted_keys: np.ndarray) -> np.ndarray:
    """Start index of every run of equal values in a sorted array."""
    flag = np.empty(len(sorted_keys), dtype=bool)
    if len(flag):
        flag[0] = True
        np.not_equal(sorted_keys[1:], sorted_keys[:-1], out=flag[1:])
    return np.flatnonzero(flag)


@dataclass
class Classes:
    """Equivalence classes of one node, with the per-class privacy verdict."""

    keys: np.ndarray  # class key (cell key // m), sorted
    sizes: np.ndarray  # int64
    failing: np.ndarray  # bool: class violates the model (to be suppressed)
    _suppressed: int | None = None

    @property
    def suppressed(self) -> int:
        if self._suppressed is None:
            self._suppressed = int(self.sizes[self.failing].sum())
        return self._suppressed


def classes_of(p: Problem, keys: np.ndarray, counts: np.ndarray, crit: Criteria) -> Classes:
    """Group cells into classes and evaluate the privacy models on each class."""
    if p.m == 1:
        ckeys, sizes = keys, counts
        failing = sizes < crit.k
        return Classes(ckeys, sizes, failing)
    cls = keys // p.m
    sens = keys % p.m
    starts = _run_starts(cls)
    ckeys = cls[starts]
    sizes = np.add.reduceat(counts, starts)
    failing = sizes < crit.k
    cell_class = np.repeat(np.arange(len(starts)), np.diff(np.append(starts, len(cls))))
    if crit.l is not None:
        distinct = np.diff(np.append(starts, len(cls)))
        if crit.l_variant == "distinct":
            failing |= distinct < crit.l
        elif crit.l_variant == "entropy":
            prob = counts / sizes[cell_class]
            ent = -np.add.reduceat(prob * np.log2(prob), starts)
            failing |= ent < math.log2(crit.l) - 1e-12
        elif crit.l_variant == "recursive":
            ll = int(crit.l)
            # rank cells within their class by descending count
            order = np.lexsort((-counts, cell_class))
            rank = np.arange(len(order)) - starts[cell_class[order]]
            top = np.zeros(len(sizes), dtype=np.int64)
            sel = order[rank < ll - 1]
            np.add.at(top, cell_class[sel], counts[sel])
            r1 = np.zeros(len(sizes), dtype=np.int64)
            np.maximum.at(r1, cell_class, counts)
            ok = (distinct >= ll) & (r1 < crit.c * (sizes - top))
            failing |= ~ok
        else:  # pragma: no cover - validated in models
            raise InternalError(f"unknown l-diversity variant {crit.l_variant!r}")
    if crit.t is not None:
        prob = counts / sizes[cell_class]
        if not crit.t_ordered:
            qv = p.q[sens]
            dist = 0.5 * (1.0 + np.bincount(cell_class, weights=np.abs(qv - prob) - qv,
                                             minlength=len(sizes)))
            failing |= dist > crit.t + 1e-12
        else:
            dist = np.empty(len(sizes))
            chunk = max(1, 20_000_000 // p.m)
            for a in range(0, len(sizes), chunk):
                b = min(len(sizes), a + chunk)
                sel = (cell_class >= a) & (cell_class < b)
                dense = np.zeros((b - a, p.m))
                dense[cell_class[sel] - a, sens[sel]] = prob[sel]
                cum = np.cumsum(dense - p.q, axis=1)
                dist[a:b] = np.abs(cum).sum(axis=1)
            failing |= dist > crit.t * (p.m - 1) + 1e-12
    return Classes(ckeys, sizes, failing)


def class_codes(p: Problem, ckeys: np.ndarray, j: int) -> np.ndarray:
    """Code (at the node's level) of QI j for each class key."""
    return (ckeys // (p.strides[j] // p.m)) % p.radix[j]


# ------------------------------------------------------------------------- metrics
def information_loss(p: Problem, levels: Sequence[int], c: Classes) -> dict[str, float]:
    """All five ARX utility metrics of a node (lower is better).

    * nu-entropy: MetricMDNUNMEntropy (sum over QIs); suppressed records add the entropy
      of generalizing their values to '*'.
    * loss: MetricMDNMLoss, geometric mean of normalized per-QI loss; a suppressed record
      counts as fully generalized (loss 1).
    * discernibility: MetricSDNMDiscernability, sum of |E|^2 plus |D| per suppressed record.
    * aecs: MetricSDAECS, |D| / (#released classes + 1 if anything is suppressed).
    * precision: MetricMDNMPrecision, mean over QIs of level/height (1 when suppressed).
    """
    return {m: metric_value(p, levels, c, m) for m in METRICS}


def metric_value(p: Problem, levels: Sequence[int], c: Classes, metric: str) -> float:
    n = float(p.rows)
    fail = c.failing
    s = float(c.sizes[fail].sum())
    kept = ~fail
    if metric == "discernibility":
        sz = c.sizes[kept].astype(np.float64)
        return float(np.sum(sz * sz) + n * s)
    if metric == "aecs":
        groups = float(np.count_nonzero(kept)) + (1.0 if s > 0 else 0.0)
        return n / groups
    d = p.dims
    if metric == "precision":
        u = n - s
        total = 0.0
        for j in range(d):
            h = int(p.heights[j])
            value = 0.0 if h == 0 else levels[j] / h
            total += ((u * value + s) / n) / d
        return total
    if metric == "nu-entropy-monotonic":
        return lower_bound(p, levels, "nu-entropy")
    if metric == "nu-entropy":
        total = 0.0
        for j in range(d):
            raw = p.gen_entropy(j, levels[j])
            if s > 0:
                codes = class_codes(p, c.keys[fail], j)
                cnt = np.bincount(codes, weights=c.sizes[fail])
                cnt = cnt[cnt > 0]
                raw += float(np.sum(cnt * np.log2(cnt / s)))
            total += _round(-raw if raw != 0.0 else 0.0)
        return total
    if metric == "loss":
        result = 1.0
        for j in range(d):
            share = p.shares(j, levels[j])
            codes = class_codes(p, c.keys[kept], j)
            x = float(np.sum(c.sizes[kept] * share[codes])) + s
            result *= math.pow(_normalize_loss(x, n, int(p.radix[j])) + 1.0, 1.0 / d)
        return result - 1.0
    raise ConfigError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")


def _normalize_loss(x: float, n: float, domain: int) -> float:
    lo = n / domain
    if n - lo <= 0:
        return 0.0
    return _round(max(0.0, (x - lo) / (n - lo)))


def lower_bound(p: Problem, levels: Sequence[int], metric: str,
                c: Classes | None = None) -> float | None:
    """A lower bound of ``metric`` valid for the node and all its successors.

    Class-independent bounds (precision, nu-entropy, loss) are returned when ``c`` is None;
    class-dependent ones (discernibility: DM*, aecs: |D|/#classes) only when ``c`` is given.
    """
    d = p.dims
    if metric == "nu-entropy-monotonic":
        metric = "nu-entropy"
    if metric in ("precision", "nu-entropy", "loss"):
        if c is not None:
            return None
        parts = [p.bound_part(metric, j, levels[j]) for j in range(d)]
        if metric == "loss":
            result = 1.0
            for v in parts:
                result *= math.pow(v + 1.0, 1.0 / d)
            return result - 1.0
        total = 0.0
        for v in parts:
            total += v
        return total
    if c is None:
        return None
    if metric == "discernibility":
        sz = c.sizes.astype(np.float64)
        return float(np.dot(sz, sz))
    if metric == "aecs":
        return float(p.rows) / float(len(c.sizes))
    raise ConfigError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")


# ------------------------------------------------------------------------- search
@dataclass
class SearchResult:
    levels: tuple[int, ...] | None
    loss: float | None
    classes: Classes | None
    nodes_total: int
    nodes_evaluated: int
    nodes_anonymous: int
    nodes_pruned: int
    seconds: float


def lattice_nodes(heights: Sequence[int]) -> np.ndarray:
    """All nodes (rows of levels) in visiting order: total level, then lexicographic."""
    grids = np.indices([h + 1 for h in heights]).reshape(len(heights), -1).T
    order = np.lexsort([grids[:, j] for j in range(len(heights) - 1, -1, -1)]
                       + [grids.sum(axis=1)])
    return grids[order]


def search(p: Problem, crit: Criteria, metric: str, progress=None,
           cache_bytes: int = 2**30) -> SearchResult:
    """Globally optimal full-domain generalization under ``crit`` for ``metric``.

    ``cache_bytes`` bounds the memory held by cached node cells; when it is exceeded the
    oldest entries are dropped and later nodes roll up from any cached finer node (or
    from the level-0 cells), trading time for memory.
    """
    if metric not in METRICS + EXTRA_METRICS:
        raise ConfigError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
    t0 = time.perf_counter()
    d = p.dims
    heights = [int(h) for h in p.heights]
    mult = np.ones(d, dtype=np.int64)
    for j in range(d - 2, -1, -1):
        mult[j] = mult[j + 1] * (heights[j + 1] + 1)
    nodes = lattice_nodes(heights)
    total = len(nodes)
    pruned = np.zeros(total, dtype=bool)  # indexed by mixed-radix node id
    # cells of computed nodes, kept until their last successor has been visited
    cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    remaining: dict[int, int] = {}
    cached_bytes = 0
    best_loss: float | None = None
    best_levels: tuple[int, ...] | None = None
    best_classes: Classes | None = None
    evaluated = anonymous = skipped = 0
    tol = 1e-12
    class_bound = metric in ("discernibility", "aecs")

    def prune_bound(bound: float | None) -> bool:
        return bound is not None and best_loss is not None and (
            bound > best_loss + tol * max(1.0, abs(best_loss))
        )

    for node in nodes:
        lv = tuple(int(x) for x in node)
        nid = int(np.dot(node, mult))
        if progress is not None:
            progress.update(1)
        preds = [nid - int(mult[j]) for j in range(d) if lv[j] > 0]
        sources = [(q, cache[q]) for q in preds if q in cache]
        for q in preds:
            remaining[q] -= 1
            if remaining[q] == 0:
                del remaining[q]
                gone = cache.pop(q, None)
                if gone is not None:
                    cached_bytes -= gone[0].nbytes + gone[1].nbytes
        successors = sum(1 for j in range(d) if lv[j] < heights[j])
        if successors:
            remaining[nid] = successors
        if any(pruned[q] for q in preds):
            pruned[nid] = True
            skipped += 1
            continue
        if prune_bound(lower_bound(p, lv, metric)):
            pruned[nid] = True
            skipped += 1
            continue
        if not preds:
            keys, counts = p.cell_keys, p.cell_counts
        else:
            if not sources:  # predecessors evicted: any cached finer node will do
                sources = [(q, c) for q, c in cache.items()
                           if all(a <= b for a, b in zip(_levels_of(q, mult, heights), lv,
                                                         strict=True))]
            if sources:
                best_pred, cells = min(sources, key=lambda item: len(item[1][0]))
                src = _levels_of(best_pred, mult, heights)
            else:
                cells, src = (p.cell_keys, p.cell_counts), (0,) * d
            keys, counts = rollup(p, *cells, src, lv)
            del sources, cells
        if successors:
            cache[nid] = (keys, counts)
            cached_bytes += keys.nbytes + counts.nbytes
            while cached_bytes > cache_bytes and len(cache) > 1:
                old = next(iter(cache))
                gone = cache.pop(old)
                cached_bytes -= gone[0].nbytes + gone[1].nbytes
        evaluated += 1
        cls = classes_of(p, keys, counts, crit)
        if class_bound and prune_bound(lower_bound(p, lv, metric, cls)):
            pruned[nid] = True
            continue
        if cls.suppressed > crit.max_outliers:
            continue
        anonymous += 1
        loss = metric_value(p, lv, cls, metric)
        if best_loss is None or loss < best_loss:
            best_loss, best_levels, best_classes = loss, lv, cls
    return SearchResult(best_levels, best_loss, best_classes, total, evaluated, anonymous,
                        skipped, time.perf_counter() - t0)


def _levels_of(nid: int, mult: np.ndarray, heights: Sequence[int]) -> tuple[int, ...]:
    return tuple(int(nid // int(mult[j]) % (heights[j] + 1)) for j in range(len(heights)))


def node_classes(p: Problem, levels: Sequence[int], crit: Criteria) -> Classes:
    """Classes of one node computed directly from the level-0 cells."""
    keys, counts = rollup(p, p.cell_keys, p.cell_counts, [0] * p.dims, levels)
    return classes_of(p, keys, counts, crit)
