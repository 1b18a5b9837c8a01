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


def monotone_anonymity(crit: Criteria) -> bool:
    """Whether "anonymous within the suppression limit" is monotone under generalization.

    Merging classes (one level up in one QI) can only shrink the set of records that
    violate k-anonymity or distinct-l-diversity: a merged class that fails is a union of
    classes that all fail. So for those models a node that is anonymous within the limit
    makes all its generalizations anonymous, and a node that is not makes all its
    specializations not anonymous (ARX's predictive tagging). Entropy and recursive
    l-diversity and t-closeness are monotone only when nothing may be suppressed (the
    merge of passing classes passes: entropy is concave, recursive-(c,l) is preserved,
    the EMD is convex), since a failing merged class may contain passing parts.
    """
    if crit.max_outliers == 0:
        return True
    return crit.t is None and crit.l_variant in (None, "distinct")


def _static_bounds(p: Problem, nodes: np.ndarray, metric: str) -> np.ndarray:
    """Class-independent lower bound of every node (-inf where none is known)."""
    if metric == "nu-entropy-monotonic":
        metric = "nu-entropy"
    if metric not in ("precision", "nu-entropy", "loss"):
        return np.full(len(nodes), -np.inf)
    d = p.dims
    parts = [np.array([p.bound_part(metric, j, lv) for lv in range(int(p.heights[j]) + 1)])
             for j in range(d)]
    if metric == "loss":
        out = np.ones(len(nodes))
        for j in range(d):
            out *= np.power(parts[j][nodes[:, j]] + 1.0, 1.0 / d)
        return out - 1.0
    out = np.zeros(len(nodes))
    for j in range(d):
        out += parts[j][nodes[:, j]]
    return out


class _Cells:
    """Cells of lattice nodes: rolled up from the level-0 cells or a cached finer node.

    The level-0 cells are kept as a digits matrix (one code per QI, plus the sensitive
    code), so a node whose generalized domain is small is computed with one bincount
    over a compact mixed-radix index; larger domains fall back to sorting.
    """

    def __init__(self, p: Problem, cache_bytes: int) -> None:
        self.p = p
        self.cache_bytes = cache_bytes
        self.cache: dict[tuple[int, ...], tuple[np.ndarray, np.ndarray]] = {}
        self.order: list[tuple[int, ...]] = []
        slots = 1024
        self.slot_levels = np.zeros((slots, p.dims), dtype=np.int64)
        self.slot_cells = np.full(slots, np.inf)
        self.slot_node: list = [None] * slots
        self.slot_of: dict[tuple[int, ...], int] = {}
        self.free = list(range(slots))
        self.bytes = 0
        n = len(p.cell_keys)
        self.digits = [((p.cell_keys // p.strides[j]) % p.radix[j]).astype(np.int32)
                       for j in range(p.dims)]
        self.sens = (p.cell_keys % p.m).astype(np.int32) if p.m > 1 else None
        self.dense_limit = max(1 << 16, 4 * n)
        self.unit_counts = bool(n) and int(p.cell_counts.max()) == 1
        self.pre: dict[tuple[int, int], np.ndarray] = {}
        self.pre_bytes = 0
        self.pre_limit = 1 << 29
        self.compact_limit = 1 << 62
        self.weights = p.cell_counts.astype(np.float64)

    def get(self, lv: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
        p = self.p
        if not any(lv):
            return p.cell_keys, p.cell_counts
        src = self._source(lv)
        if src is not None and 4 * len(src[1]) < len(p.cell_keys):
            keys, counts = rollup(p, src[1], src[2], src[0], lv)
        else:
            radix = [len(p.hierarchies[j].labels(lv[j])) for j in range(p.dims)]
            size = p.m
            for r in radix:
                size *= r
            if size < self.compact_limit:
                keys, counts = self._dense(lv, radix)
            else:
                keys, counts = rollup(p, p.cell_keys, p.cell_counts, (0,) * p.dims, lv)
        self._store(lv, keys, counts)
        return keys, counts

    def _source(self, lv: tuple[int, ...]):
        """The cached node below ``lv`` (componentwise <=) with the fewest cells, or None."""
        if not self.cache:
            return None
        ok = self.slot_cells.copy()
        for j in range(self.p.dims):
            ok[self.slot_levels[:, j] > lv[j]] = np.inf
        i = int(np.argmin(ok))
        if not np.isfinite(ok[i]):
            return None
        best = self.slot_node[i]
        return (best, *self.cache[best])

    def _store(self, lv: tuple[int, ...], keys: np.ndarray, counts: np.ndarray) -> None:
        if lv in self.cache:
            return
        while self.order and (self.bytes + keys.nbytes + counts.nbytes > self.cache_bytes
                              or len(self.order) >= len(self.slot_cells)):
            old = self.order.pop(0)
            gone = self.cache.pop(old)
            self.bytes -= gone[0].nbytes + gone[1].nbytes
            slot = self.slot_of.pop(old)
            self.slot_cells[slot] = np.inf
            self.free.append(slot)
        if not self.free:
            return
        slot = self.free.pop()
        self.cache[lv] = (keys, counts)
        self.order.append(lv)
        self.bytes += keys.nbytes + counts.nbytes
        self.slot_of[lv] = slot
        self.slot_node[slot] = lv
        self.slot_levels[slot] = lv
        self.slot_cells[slot] = len(keys)

    def _codes_at(self, j: int, level: int) -> np.ndarray:
        """Code at ``level`` of QI j for every level-0 cell (cached within a memory budget)."""
        key = (j, level)
        got = self.pre.get(key)
        if got is None:
            codes = self.p.hierarchies[j].leaf_codes(level)
            got = codes.astype(np.int32)[self.digits[j]] if len(codes) < 2**31 else \
                codes[self.digits[j]]
            if self.pre_bytes + got.nbytes <= self.pre_limit:
                self.pre[key] = got
                self.pre_bytes += got.nbytes
        return got

    def _dense(self, lv: tuple[int, ...], radix: list[int]) -> tuple[np.ndarray, np.ndarray]:
        p = self.p
        cstride = np.empty(p.dims, dtype=np.int64)
        total = p.m
        for j in range(p.dims - 1, -1, -1):
            cstride[j] = total
            total *= radix[j]
        compact = np.zeros(len(p.cell_keys), dtype=np.int32 if total < 2**31 else np.int64)
        for j in range(p.dims):
            part = self._codes_at(j, lv[j])
            if cstride[j] == 1:
                compact += part
            else:
                compact += part * int(cstride[j])
        if self.sens is not None:
            compact += self.sens
        if total <= self.dense_limit:
            if self.unit_counts:
                dense = np.bincount(compact, minlength=total)
            else:
                dense = np.bincount(compact, weights=self.weights, minlength=total)
            idx = np.flatnonzero(dense)
            counts = dense[idx].astype(p.cell_counts.dtype)
        else:
            order = np.argsort(compact)
            compact = compact[order]
            starts = _run_starts(compact)
            idx = compact[starts]
            counts = np.add.reduceat(p.cell_counts[order], starts)
        keys = np.zeros(len(idx), dtype=np.int64)
        for j in range(p.dims):
            keys += ((idx // cstride[j]) % radix[j]) * p.strides[j]
        if self.sens is not None:
            keys += idx % p.m
        return keys, counts


def with_units(cls: Classes, units, keys: np.ndarray, k: int) -> Classes:
    """``cls`` with the unit-level verdicts (``privacy.kanon.persons``) added to its own."""
    from privacy.kanon.persons import unit_failing

    ckeys, failing = unit_failing(units, keys, k)
    if len(ckeys) != len(cls.keys) or not np.array_equal(ckeys, cls.keys):
        raise InternalError("unit-level and record-level classes differ; this is a bug")
    return Classes(cls.keys, cls.sizes, cls.failing | failing)


def search(p: Problem, crit: Criteria, metric: str, progress=None,
           cache_bytes: int = 2**28, units=None) -> SearchResult:
    """Globally optimal full-domain generalization under ``crit`` for ``metric``.

    Flash-style: starting from the lowest unresolved node, a path is built upwards to
    the top (each step to the successor with the smallest loss bound) and searched
    by bisection for the anonymity boundary; each check tags all generalizations
    anonymous or all specializations not anonymous where that is sound
    (:func:`monotone_anonymity`). A node is pruned when its loss bound (valid for the
    node and its generalizations) exceeds the best loss found. Every node is resolved
    (evaluated, tagged not anonymous, or pruned), so the result is the minimum over all
    anonymous nodes of (loss, total level, lexicographic order), as by brute force.

    ``cache_bytes`` bounds the memory held by cached node cells (oldest dropped first).
    ``units`` (``privacy.kanon.persons.Units``): also require k distinct units and
    unit-level l per class (both monotone, so the tagging stays sound).
    """
    if metric not in METRICS + EXTRA_METRICS:
        raise ConfigError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
    t0 = time.perf_counter()
    d = p.dims
    heights = [int(h) for h in p.heights]
    nodes = lattice_nodes(heights)
    total = len(nodes)
    mult = np.ones(d, dtype=np.int64)
    for j in range(d - 2, -1, -1):
        mult[j] = mult[j + 1] * (heights[j + 1] + 1)
    pos = np.empty(total, dtype=np.int64)  # mixed-radix node id -> row in ``nodes``
    pos[nodes @ mult] = np.arange(total)
    bound = _static_bounds(p, nodes, metric)
    class_bound = metric in ("discernibility", "aecs")
    monotone = monotone_anonymity(crit)
    state = np.zeros(total, dtype=np.int8)  # 1 anonymous, -1 not anonymous, 0 unknown
    evaluated_mask = np.zeros(total, dtype=bool)
    cells = _Cells(p, cache_bytes)
    unit_cells = None if units is None else _Cells(units.problem, cache_bytes)
    best: list = [None, None, None]  # loss, key (loss, total level, levels), classes
    counts = {"evaluated": 0, "anonymous": 0}
    tol = 1e-12

    def over(i: int) -> bool:
        b = bound[i]
        return best[0] is not None and b > best[0] + tol * max(1.0, abs(best[0]))

    def resolved(i: int) -> bool:
        return bool(evaluated_mask[i]) or state[i] == -1 or over(i)

    ge = [[nodes[:, j] >= lv for lv in range(heights[j] + 1)] for j in range(d)]
    le = [[nodes[:, j] <= lv for lv in range(heights[j] + 1)] for j in range(d)]

    def up_set(i: int) -> np.ndarray:
        mask = ge[0][nodes[i, 0]].copy()
        for j in range(1, d):
            mask &= ge[j][nodes[i, j]]
        return mask

    def down_set(i: int) -> np.ndarray:
        mask = le[0][nodes[i, 0]].copy()
        for j in range(1, d):
            mask &= le[j][nodes[i, j]]
        return mask

    def evaluate(i: int) -> None:
        lv = tuple(int(x) for x in nodes[i])
        keys, cnts = cells.get(lv)
        cls = classes_of(p, keys, cnts, crit)
        if unit_cells is not None:
            cls = with_units(cls, units, unit_cells.get(lv)[0], crit.k)
        counts["evaluated"] += 1
        evaluated_mask[i] = True
        anonymous = cls.suppressed <= crit.max_outliers
        if monotone:
            if anonymous:
                state[up_set(i)] = 1
            else:
                state[down_set(i)] = -1
        else:
            state[i] = 1 if anonymous else -1
            if not anonymous and int(cls.sizes[cls.sizes < crit.k].sum()) > crit.max_outliers:
                # the k-anonymity part alone fails: so does every specialization
                state[down_set(i)] = -1
        if class_bound:
            lb = lower_bound(p, lv, metric, cls)
            up = up_set(i)
            np.maximum(bound, np.where(up, lb, -np.inf), out=bound)
            if over(i):
                return
        if not anonymous or over(i):
            return
        counts["anonymous"] += 1
        loss = metric_value(p, lv, cls, metric)
        key = (loss, sum(lv), lv)
        if best[1] is None or key < best[1]:
            best[0], best[1], best[2] = loss, key, cls

    def successors(i: int):
        for j in range(d):
            if nodes[i, j] < heights[j]:
                yield int(pos[int(nodes[i] @ mult) + int(mult[j])])

    for i in range(total):
        while not resolved(i):
            if state[i] == 1 or not monotone:
                evaluate(i)
                break
            path = [i]
            while True:
                options = [s for s in successors(path[-1])
                           if state[s] == 0 and not evaluated_mask[s]]
                if not options:
                    break
                path.append(min(options, key=lambda s: bound[s]))
            lo, hi = 0, len(path) - 1
            while lo <= hi:
                mid = lo + int((hi - lo) * 0.75 + 0.5)
                k = path[mid]
                if state[k] == 0 and not evaluated_mask[k]:
                    evaluate(k)
                if state[k] == 1:
                    hi = mid - 1
                else:
                    lo = mid + 1
            if not resolved(i):
                evaluate(i)
    if progress is not None:
        progress.update(total)
    evaluated = counts["evaluated"]
    levels = None if best[1] is None else best[1][2]
    return SearchResult(levels, best[0], best[2], total, evaluated, counts["anonymous"],
                        total - evaluated, time.perf_counter() - t0)


def _levels_of(nid: int, mult: np.ndarray, heights: Sequence[int]) -> tuple[int, ...]:
    return tuple(int(nid // int(mult[j]) % (heights[j] + 1)) for j in range(len(heights)))


def node_classes(p: Problem, levels: Sequence[int], crit: Criteria, units=None) -> Classes:
    """Classes of one node computed directly from the level-0 cells (and unit cells)."""
    keys, counts = rollup(p, p.cell_keys, p.cell_counts, [0] * p.dims, levels)
    cls = classes_of(p, keys, counts, crit)
    if units is not None:
        up = units.problem
        ukeys, _ = rollup(up, up.cell_keys, up.cell_counts, [0] * up.dims, levels)
        cls = with_units(cls, units, ukeys, crit.k)
    return cls
