"""Noise mechanisms: thin wrappers over diffprivlib's floating-point-safe mechanisms.

Only these are used (never numpy's raw Laplace):

* counts, delta == 0: ``Geometric`` (two-sided geometric, integer noise);
* counts, delta > 0: ``GaussianDiscrete`` (integer noise);
* real values, delta == 0: ``Snapping`` (Mironov's snapping mechanism; bounded output);
* real values, delta > 0: ``GaussianAnalytic`` (Balle & Wang).

A :class:`Noise` knows its standard deviation and a 95 % error bound (|noise| is at most the
bound with probability >= 0.95), both in the units of the released value.

Randomness: pass ``random_state`` (an int or a ``numpy.random.RandomState``) for reproducible
tests; ``None`` (the production default) makes diffprivlib draw from the operating system's
cryptographic generator (``secrets.SystemRandom``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from diffprivlib.mechanisms import GaussianAnalytic, GaussianDiscrete, Geometric, Snapping

from opencity.errors import ConfigError, InternalError

Z95 = 1.959963984540054
# Public clamp of the Snapping mechanism, in units of the sensitivity: released real values
# lie in [-SNAP_BOUND * sensitivity, SNAP_BOUND * sensitivity]. 2**36 costs a relative
# epsilon loss of 12 * 2**36 * 2**-53 ~ 9e-5 (the noise scale uses the effective epsilon).
SNAP_BOUND = float(2**36)


def as_random_state(random_state: Any) -> Any:
    """Normalize an int seed to one shared ``RandomState``; pass through None / RandomState."""
    if random_state is None or isinstance(random_state, np.random.RandomState):
        return random_state
    if isinstance(random_state, (int, np.integer)) and not isinstance(random_state, bool):
        return np.random.RandomState(int(random_state) % 2**32)
    raise ConfigError(
        f"random_state must be None, an int seed or a numpy RandomState, got {random_state!r}"
    )


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
        mechanism: diffprivlib class name, e.g. "Geometric".
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
        """Return ``values`` with independent noise added to each element (one draw per cell)."""
        if self._mech is None:
            raise InternalError("Noise has no mechanism attached")
        rnd = self._mech.randomise
        if self.integer:
            return np.fromiter((rnd(int(v)) for v in values), dtype=np.int64, count=len(values))
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

    Geometric when ``delta == 0``, discrete Gaussian otherwise.
    """
    rs = as_random_state(random_state)
    try:
        if delta == 0:
            mech = Geometric(epsilon=epsilon, sensitivity=int(sensitivity), random_state=rs)
            alpha = math.exp(-epsilon / sensitivity)
            std = math.sqrt(2 * alpha) / (1 - alpha)
            return Noise("Geometric", epsilon, 0.0, sensitivity, std, _geometric_bound(alpha),
                         True, mech)
        mech = GaussianDiscrete(epsilon=epsilon, delta=delta, sensitivity=int(sensitivity),
                                random_state=rs)
        std, bound = _discrete_gaussian_bound(float(mech._scale))
        return Noise("GaussianDiscrete", epsilon, delta, sensitivity, std, bound, True, mech)
    except (TypeError, ValueError) as err:
        raise ConfigError(
            f"cannot build a count mechanism with epsilon={epsilon}, delta={delta}, "
            f"sensitivity={sensitivity}: {err}"
        ) from err


def real_noise(epsilon: float, delta: float, sensitivity: float,
               random_state: Any = None) -> Noise:
    """Real-valued noise for a sum whose value changes by at most ``sensitivity`` per unit.

    Snapping (pure epsilon) when ``delta == 0``, analytic Gaussian otherwise.
    """
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
