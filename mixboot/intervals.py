"""Confidence intervals from bootstrap replicates.

Every function takes a ``(B, p)`` array of replicates (one row per
replicate, one column per statistic) and returns a ``(p, 2)`` array of
``[lower, upper]`` bounds.  Non-finite entries (NaN from failed replicates,
and also +/-inf) are dropped column by column, so one bad replicate does not
poison the other statistics.  A column without any usable value gives
``[nan, nan]``.  A 1-D input is treated as a single statistic.

>>> import numpy as np
>>> x = np.arange(1.0, 101.0)[:, None]
>>> percentile(x, 0.9)
array([[ 5.95, 95.05]])
>>> shortest(x, 0.9)
array([[ 1., 90.]])
>>> basic(x, estimate=50.0, level=0.9)
array([[ 4.95, 94.05]])
"""

from __future__ import annotations

import math
import numbers
from statistics import NormalDist

import numpy as np

__all__ = ["percentile", "shortest", "basic", "normal", "bootstrap_interval", "METHODS"]

#: Interval methods understood by :func:`bootstrap_interval`.
METHODS = ("perc", "shortest", "basic", "norm")


def _check_level(level) -> float:
    # bool is an Integral; level=True is certainly a mistake, not 1.0.
    if isinstance(level, bool) or not isinstance(level, numbers.Real):
        raise TypeError(f"level must be a real number in (0, 1), got {level!r}")
    level = float(level)
    if not (0.0 < level < 1.0):
        raise ValueError(f"level must be strictly between 0 and 1, got {level!r}")
    return level


def _as_samples(samples) -> np.ndarray:
    arr = np.asarray(samples, dtype=float)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(f"samples must be a 1-D or 2-D (B, p) array, got shape {arr.shape}")
    return arr


def _as_estimate(estimate, p: int) -> np.ndarray:
    if estimate is None:
        raise ValueError("estimate is required for this interval method")
    est = np.asarray(estimate, dtype=float)
    if est.ndim == 0:
        est = np.full(p, float(est))
    est = est.reshape(-1)
    if est.shape != (p,):
        raise ValueError(
            f"estimate must be a scalar or have length p={p}, got shape {np.shape(estimate)}"
        )
    return est


def _columns(arr: np.ndarray):
    """Yield the finite values of each column."""
    for j in range(arr.shape[1]):
        col = arr[:, j]
        yield col[np.isfinite(col)]


def percentile(samples, level=0.95) -> np.ndarray:
    """Equal-tailed percentile interval.

    Bounds are the ``(1 - level)/2`` and ``(1 + level)/2`` quantiles with
    numpy's default (linear) interpolation.

    >>> percentile([1.0, 2.0, 3.0, 4.0, 5.0], 0.5)
    array([[2., 4.]])
    """
    level = _check_level(level)
    arr = _as_samples(samples)
    probs = [(1.0 - level) / 2.0, (1.0 + level) / 2.0]
    out = np.full((arr.shape[1], 2), np.nan)
    for j, v in enumerate(_columns(arr)):
        if v.size:
            out[j] = np.quantile(v, probs)
    return out


def _shortest_count(level: float, n: int) -> int:
    # ceil(level * n) as in MixedModels.jl's shortestcovint, but a product
    # that is an integer up to rounding (0.55 * 100 == 55.00000000000001)
    # must not demand one extra value.
    prod = level * n
    k = math.ceil(prod)
    if k - prod > 1 - 1e-9 * max(1.0, prod):
        k -= 1
    return min(max(k, 1), n)


def shortest(samples, level=0.95) -> np.ndarray:
    """Shortest interval holding at least ``level`` of the replicates.

    For each column, with ``v`` its sorted finite values (``n`` of them) and
    ``k = ceil(level * n)``, the result is the narrowest window
    ``[v[i], v[i + k - 1]]``; ties go to the leftmost window.  This is
    MixedModels.jl's ``shortestcovint`` applied column by column.

    >>> shortest([0.0, 5.0, 5.5, 6.0, 20.0], 0.6)
    array([[5., 6.]])
    """
    level = _check_level(level)
    arr = _as_samples(samples)
    out = np.full((arr.shape[1], 2), np.nan)
    for j, v in enumerate(_columns(arr)):
        n = v.size
        if n == 0:
            continue
        v = np.sort(v)
        k = _shortest_count(level, n)
        widths = v[k - 1 :] - v[: n - k + 1]
        i = int(np.argmin(widths))  # argmin keeps the first of equal widths
        out[j] = (v[i], v[i + k - 1])
    return out


def basic(samples, estimate, level=0.95) -> np.ndarray:
    """Basic (reverse percentile) interval ``[2*est - q_hi, 2*est - q_lo]``.

    ``estimate`` is the statistic on the original fit: a scalar or one value
    per column.

    >>> basic([1.0, 2.0, 3.0, 4.0, 5.0], 2.0, 0.5)
    array([[0., 2.]])
    """
    level = _check_level(level)
    arr = _as_samples(samples)
    est = _as_estimate(estimate, arr.shape[1])
    q = percentile(arr, level)
    return np.column_stack([2.0 * est - q[:, 1], 2.0 * est - q[:, 0]])


def normal(samples, estimate, level=0.95) -> np.ndarray:
    """Bias-corrected normal interval, as R's ``boot::norm.ci``.

    ``(est - bias) -/+ z * sd`` with ``bias = mean(samples) - est``, ``sd``
    the replicates' standard deviation (``ddof=1``) and ``z`` the standard
    normal ``(1 + level)/2`` quantile.  Needs two finite values per column.

    >>> normal([1.0, 2.0, 3.0], 2.0, 0.95).round(3)
    array([[0.04, 3.96]])
    """
    level = _check_level(level)
    arr = _as_samples(samples)
    est = _as_estimate(estimate, arr.shape[1])
    z = NormalDist().inv_cdf((1.0 + level) / 2.0)
    out = np.full((arr.shape[1], 2), np.nan)
    for j, v in enumerate(_columns(arr)):
        if v.size < 2 or not np.isfinite(est[j]):
            continue
        centre = 2.0 * est[j] - v.mean()  # est - bias
        half = z * v.std(ddof=1)
        out[j] = (centre - half, centre + half)
    return out


def bootstrap_interval(samples, *, method, level, estimate=None) -> np.ndarray:
    """Dispatch to one of the interval methods.

    ``method`` is one of ``"perc"``, ``"shortest"``, ``"basic"``, ``"norm"``;
    ``"basic"`` and ``"norm"`` need ``estimate``.

    >>> bootstrap_interval([1.0, 2.0, 3.0, 4.0, 5.0], method="perc", level=0.5)
    array([[2., 4.]])
    """
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    level = _check_level(level)
    if method == "perc":
        return percentile(samples, level)
    if method == "shortest":
        return shortest(samples, level)
    if estimate is None:
        raise ValueError(f"method={method!r} needs the original estimate: pass estimate=")
    if method == "basic":
        return basic(samples, estimate, level)
    return normal(samples, estimate, level)
