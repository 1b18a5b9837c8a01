"""Noise mechanisms: exact integer noise from OpenDP, real-valued noise from diffprivlib.

Only these are used (never numpy's raw Laplace in production):

* counts, delta == 0: two-sided geometric (discrete Laplace) noise, P(Z = z) proportional to
  alpha^|z| with alpha = exp(-epsilon / sensitivity); drawn by OpenDP's exact sampler
  (``make_laplace`` on an integer vector: integer arithmetic, OpenDP's CSPRNG);
* counts, delta > 0: discrete Gaussian (Canonne, Kamath and Steinke) with the sigma
  diffprivlib's ``GaussianDiscrete`` derives from (epsilon, delta, sensitivity) (same
  accounting, computed here by the same bisection); drawn by OpenDP's exact sampler
  (``make_gaussian`` on an integer vector);
* real values, delta == 0: diffprivlib's ``Snapping`` (Mironov's snapping mechanism; bounded
  output), with ``crlibm``'s correctly rounded log so its floating-point proof applies;
* real values, delta > 0: diffprivlib's ``GaussianAnalytic`` (Balle & Wang).

diffprivlib (which imports scikit-learn and scipy) is imported only by :func:`real_noise`, so
a task that releases counts alone starts in well under a second.

A :class:`Noise` knows its standard deviation and a 95 % error bound (|noise| is at most the
bound with probability >= 0.95), both in the units of the released value.

Randomness: ``random_state=None`` (the production default) draws from OpenDP's CSPRNG
(integer noise) or the operating system's cryptographic generator via diffprivlib (real
noise). An int seed or ``numpy.random.RandomState`` makes draws reproducible for tests: integer
noise is then drawn by a vectorised numpy sampler of the same distribution (not
cryptographically secure; never for releases).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from opencity.errors import ConfigError, InternalError

Z95 = 1.959963984540054
# Public clamp of the Snapping mechanism, in units of the sensitivity: released real values
# lie in [-SNAP_BOUND * sensitivity, SNAP_BOUND * sensitivity]. 2**36 costs a relative
# epsilon loss of 12 * 2**36 * 2**-53 ~ 9e-5 (the noise scale uses the effective epsilon).
SNAP_BOUND = float(2**36)
OPENDP_VERSION = "0.16.0"


def as_random_state(random_state: Any) -> Any:
    """Normalize an int seed to one shared ``RandomState``; pass through None / RandomState."""
    if random_state is None or isinstance(random_state, np.random.RandomState):
        return random_state
    if isinstance(random_state, (int, np.integer)) and not isinstance(random_state, bool):
        return np.random.RandomState(int(random_state) % 2**32)
    raise ConfigError(
        f"random_state must be None, an int seed or a numpy RandomState, got {random_state!r}"
    )


_OPENDP: dict[str, Any] = {}


def _opendp() -> Any:
    """OpenDP's measurement constructors (imported once; not ``opendp.prelude``, which
    pulls in scikit-learn when it is installed)."""
    if not _OPENDP:
        import opendp.domains as dpd
        import opendp.measurements as dpm
        import opendp.metrics as dpmet
        from opendp.mod import enable_features

        enable_features("contrib")
        _OPENDP.update(domains=dpd, measurements=dpm, metrics=dpmet)
    return _OPENDP


class _IntegerSampler:
    """Vectorised integer noise: discrete Laplace (``scale``) or discrete Gaussian (``sigma``).

    With no random state, one OpenDP measurement over the whole vector (exact sampling,
    OpenDP's CSPRNG). With a random state, numpy draws of the same distribution (tests).
    """

    def __init__(self, kind: str, scale: float, random_state: Any) -> None:
        self.kind = kind  # "laplace" or "gaussian"
        self.scale = float(scale)
        self.random_state = random_state
        self._meas = None

    def _measurement(self) -> Any:
        if self._meas is None:
            od = _opendp()
            dom = od["domains"].vector_domain(od["domains"].atom_domain(T="i64"))
            if self.kind == "laplace":
                self._meas = od["measurements"].make_laplace(
                    dom, od["metrics"].l1_distance(T="i64"), scale=self.scale)
            else:
                self._meas = od["measurements"].make_gaussian(
                    dom, od["metrics"].l2_distance(T="i64"), scale=self.scale)
        return self._meas

    def randomise(self, values: np.ndarray) -> np.ndarray:
        values = np.asarray(values, dtype=np.int64)
        if self.scale == 0 or len(values) == 0:
            return values.copy()
        if self.random_state is None:
            return np.asarray(self._measurement()(values.tolist()), dtype=np.int64)
        return values + self._seeded(len(values))

    def _seeded(self, n: int) -> np.ndarray:
        rs = self.random_state
        if self.kind == "laplace":
            p = -math.expm1(-1.0 / self.scale)  # 1 - alpha
            return rs.geometric(p, n).astype(np.int64) - rs.geometric(p, n).astype(np.int64)
        # Canonne-Kamath-Steinke: discrete Laplace proposals with t = floor(sigma) + 1,
        # accepted with probability exp(-(|y| - sigma^2 / t)^2 / (2 sigma^2)).
        sigma2 = self.scale**2
        t = math.floor(self.scale) + 1
        p = -math.expm1(-1.0 / t)
        out = np.empty(0, dtype=np.int64)
        while len(out) < n:
            m = 2 * (n - len(out)) + 16
            y = rs.geometric(p, m).astype(np.int64) - rs.geometric(p, m).astype(np.int64)
            accept = rs.random_sample(m) < np.exp(-((np.abs(y) - sigma2 / t) ** 2) / (2 * sigma2))
            out = np.concatenate([out, y[accept]])
        return out[:n]


def discrete_gaussian_sigma(epsilon: float, delta: float, sensitivity: int) -> float:
    """sigma of the discrete Gaussian that is (epsilon, delta)-DP for this L2 sensitivity.

    The same computation as diffprivlib 0.6's ``GaussianDiscrete._find_scale`` (Canonne,
    Kamath and Steinke, Theorem 7: the exact privacy curve of the discrete Gaussian, root
    located by doubling then bisection), so the accounting matches the mechanism used before.
    """
    if epsilon <= 0 or not 0 < delta <= 1:
        raise ValueError("the discrete Gaussian needs epsilon > 0 and 0 < delta <= 1")
    if sensitivity == 0:
        return 0.0

    def objective(sigma: float) -> float:
        idx_0 = int(np.floor(epsilon * sigma**2 / sensitivity - sensitivity / 2))
        idx_1 = int(np.floor(epsilon * sigma**2 / sensitivity + sensitivity / 2))
        idx = 1
        lhs, rhs, denom = float(idx_0 < 0), 0, 1
        term, diff = 1, 1
        while term > 0 and diff > 0:
            term = np.exp(-(idx**2) / 2 / sigma**2)
            if idx > idx_0:
                lhs += term
                if idx_0 < -idx:
                    lhs += term
                if idx > idx_1:
                    diff = -rhs
                    rhs += term
                    diff += rhs
            denom += 2 * term
            idx += 1
            if idx > 1e6:
                raise ValueError("infinite sum not converging; change epsilon and/or delta")
        return (lhs - np.exp(epsilon) * rhs) / denom - delta

    guess_0 = 1
    f_0 = objective(guess_0)
    pwr = 1 if f_0 > 0 else -1
    guess_1 = 2**pwr
    f_1 = objective(guess_1)
    while f_0 * f_1 > 0:
        guess_0 *= 2**pwr
        guess_1 *= 2**pwr
        f_0 = f_1
        f_1 = objective(guess_1)
    while not np.isclose(guess_0, guess_1, atol=1e-12, rtol=1e-6):
        guess_mid = (guess_0 + guess_1) / 2
        f_mid = objective(guess_mid)
        if f_mid * f_0 <= 0:
            f_1 = f_mid
            guess_1 = guess_mid
        if f_mid * f_1 <= 0:
            f_0 = f_mid
            guess_0 = guess_mid
    return float((guess_0 + guess_1) / 2)


def _geometric_bound(alpha: float) -> int:
    # P(|Z| > k) = 2 alpha^(k+1) / (1 + alpha) for the two-sided geometric distribution.
    if alpha <= 0:
        return 0
    k = math.log(0.05 * (1 + alpha) / 2) / math.log(alpha) - 1
    return max(0, math.ceil(k - 1e-12))


def _discrete_gaussian_bound(sigma: float) -> tuple[float, int]:
    if sigma == 0:
        return 0.0, 0
    m = math.ceil(12 * sigma) + 10
    z = np.arange(0, m + 1, dtype=float)
    w = np.exp(-(z**2) / (2 * sigma**2))
    w[1:] *= 2  # |Z| = k has two atoms for k > 0
    p = w / w.sum()
    std = float(math.sqrt((p * z**2).sum()))
    tail = 1.0 - np.cumsum(p)  # P(|Z| > k)
    return std, int(np.argmax(tail <= 0.05))


@dataclass(frozen=True)
class Noise:
    """One configured mechanism for one statistic (same for every output row).

    Attributes:
        mechanism: "Geometric" (discrete Laplace), "GaussianDiscrete", "Snapping" or
            "GaussianAnalytic".
        epsilon, delta: the budget this mechanism spends on each output row.
        sensitivity: the largest change of one row's true value when one unit is added or
            removed, in the units of the value (after contribution bounding).
        std: standard deviation of the noise (value units).
        error_bound_95: |noise| <= this with probability >= 0.95 (value units).
        integer: True for integer-valued (count) mechanisms.
    """

    mechanism: str
    epsilon: float
    delta: float
    sensitivity: float
    std: float
    error_bound_95: float
    integer: bool
    _mech: Any = field(repr=False, compare=False, default=None)

    def randomise(self, values: np.ndarray) -> np.ndarray:
        """Return ``values`` with independent noise added to each element (one draw per cell,
        vectorised for integer noise)."""
        if self._mech is None:
            raise InternalError("Noise has no mechanism attached")
        if self.integer:
            return self._mech.randomise(np.asarray(values, dtype=np.int64))
        # diffprivlib's real-valued mechanisms are scalar (one crlibm-backed draw per value)
        rnd = self._mech.randomise
        return np.fromiter((rnd(float(v)) for v in values), dtype=np.float64, count=len(values))

    def describe(self) -> dict[str, Any]:
        """JSON-ready description for privacy metadata."""
        return {
            "mechanism": self.mechanism,
            "epsilon": self.epsilon,
            "delta": self.delta,
            "sensitivity": float(self.sensitivity),
            "noise_std": float(self.std),
            "error_bound_95": float(self.error_bound_95),
        }


def count_noise(epsilon: float, delta: float, sensitivity: int, random_state: Any = None) -> Noise:
    """Integer noise for a count whose value changes by at most ``sensitivity`` per unit.

    Discrete Laplace (two-sided geometric, alpha = exp(-epsilon / sensitivity)) when
    ``delta == 0``, discrete Gaussian otherwise; both sampled exactly by OpenDP.
    """
    rs = as_random_state(random_state)
    _check_count_args(epsilon, delta, sensitivity)
    try:
        if delta == 0:
            alpha = math.exp(-epsilon / sensitivity)
            std = math.sqrt(2 * alpha) / (1 - alpha)
            sampler = _IntegerSampler("laplace", sensitivity / epsilon, rs)
            return Noise("Geometric", epsilon, 0.0, sensitivity, std, _geometric_bound(alpha),
                         True, sampler)
        sigma = discrete_gaussian_sigma(epsilon, delta, int(sensitivity))
        std, bound = _discrete_gaussian_bound(sigma)
        sampler = _IntegerSampler("gaussian", sigma, rs)
        return Noise("GaussianDiscrete", epsilon, delta, sensitivity, std, bound, True, sampler)
    except (TypeError, ValueError) as err:
        raise ConfigError(
            f"cannot build a count mechanism with epsilon={epsilon}, delta={delta}, "
            f"sensitivity={sensitivity}: {err}"
        ) from err


def _check_count_args(epsilon: float, delta: float, sensitivity: int) -> None:
    def bad(msg: str) -> ConfigError:
        return ConfigError(
            f"cannot build a count mechanism with epsilon={epsilon}, delta={delta}, "
            f"sensitivity={sensitivity}: {msg}"
        )

    for name, v in (("epsilon", epsilon), ("delta", delta)):
        if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)):
            raise bad(f"{name} must be a number")
        if not math.isfinite(v):
            raise bad(f"{name} must be finite")
    if epsilon <= 0:
        raise bad("epsilon must be > 0")
    if not 0 <= delta <= 1:
        raise bad("delta must be in [0, 1]")
    if isinstance(sensitivity, bool) or not isinstance(sensitivity, (int, np.integer)) or (
        int(sensitivity) != sensitivity
    ):
        raise bad("sensitivity must be an integer")
    if sensitivity < 1:
        raise bad("sensitivity must be >= 1")


def real_noise(epsilon: float, delta: float, sensitivity: float,
               random_state: Any = None) -> Noise:
    """Real-valued noise for a sum whose value changes by at most ``sensitivity`` per unit.

    Snapping (pure epsilon) when ``delta == 0``, analytic Gaussian otherwise.
    """
    from diffprivlib.mechanisms import GaussianAnalytic, Snapping

    rs = as_random_state(random_state)
    try:
        if delta == 0:
            bound = SNAP_BOUND * max(sensitivity, 1e-300)
            mech = Snapping(epsilon=epsilon, sensitivity=float(sensitivity), lower=-bound,
                            upper=bound, random_state=rs)
            eff = mech.effective_epsilon()
            scale = sensitivity / eff
            lam = Snapping._get_nearest_power_of_2(1.0 / eff) * sensitivity
            return Noise("Snapping", epsilon, 0.0, sensitivity, math.sqrt(2) * scale,
                         scale * math.log(20) + lam / 2, False, mech)
        mech = GaussianAnalytic(epsilon=epsilon, delta=delta, sensitivity=float(sensitivity),
                                random_state=rs)
        sigma = float(mech._scale)
        return Noise("GaussianAnalytic", epsilon, delta, sensitivity, sigma, Z95 * sigma, False,
                     mech)
    except (TypeError, ValueError) as err:
        raise ConfigError(
            f"cannot build a real-valued mechanism with epsilon={epsilon}, delta={delta}, "
            f"sensitivity={sensitivity}: {err}"
        ) from err


def selection_threshold(epsilon: float, delta: float) -> int:
    """Threshold on a Geometric(epsilon, sensitivity 1) noisy count of distinct units.

    A key held by exactly one unit reaches the threshold with probability <= ``delta``:
    P(1 + Z >= t) = alpha^(t-1) / (1 + alpha) with alpha = exp(-epsilon).
    """
    if not 0 < delta < 1:
        raise ConfigError(f"partition selection needs 0 < delta < 1, got delta={delta!r}")
    alpha = math.exp(-epsilon)
    t = 1 + math.log(delta * (1 + alpha)) / math.log(alpha)
    return max(1, math.ceil(t - 1e-12))


def selection_release_probability(n_units: int, epsilon: float, threshold: int) -> float:
    """Probability that a key with ``n_units`` units passes ``selection_threshold``."""
    alpha = math.exp(-epsilon)
    k = threshold - n_units  # need Z >= k
    if k <= 0:
        return 1 - alpha ** (-k + 1) / (1 + alpha)
    return alpha**k / (1 + alpha)


def opendp_threshold_privacy(epsilon_key: float, threshold: int, l0: int) -> tuple[float, float]:
    """(epsilon, delta) OpenDP's ``make_laplace_threshold`` proves for this selection.

    The same mechanism as the engine's partition selection: discrete Laplace noise of scale
    1 / ``epsilon_key`` on each key's distinct-unit count, keys below ``threshold`` dropped,
    one unit changing at most ``l0`` keys by 1. Used to check :func:`selection_threshold`
    against OpenDP's proof (its delta is at most ours).
    """
    od = _opendp()
    dom = od["domains"].map_domain(od["domains"].atom_domain(T="String"),
                                   od["domains"].atom_domain(T="i64"))
    metric = od["metrics"].l01inf_distance(od["metrics"].absolute_distance(T="i64"))
    meas = od["measurements"].make_laplace_threshold(dom, metric, scale=1.0 / epsilon_key,
                                                     threshold=int(threshold))
    eps, delta = meas.map((int(l0), int(l0), 1))
    return float(eps), float(delta)
