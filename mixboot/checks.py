"""Simulation-based model checks: does the observed response look like the model's draws?

Each check simulates ``nsim`` responses from the fitted model with
:func:`mixboot.simulate` (the same seed gives the same draws), sets an observed
summary beside the simulated ones and returns a small immutable result with the
numbers and a ``plot(ax=None)`` method; its artists carry a ``gid`` naming
what they show (``"observed"``, ``"simulated"``, ``"interval"``, ``"outside"``).
These are the interlace guide's three predictive checks:

- :func:`density`: the observed distribution of the response over simulated ones;
- :func:`group_summary`: a statistic per group against its predictive interval;
- :func:`statistic`: any scalar ``T(y, result)`` with a simulation p-value.

For GLMMs the draws are on the response's fitted scale, as ``simulate``
returns them: proportions of the trials for binomial models, counts for Poisson.

Examples
--------
>>> import mixboot as mb
>>> r = mb.fit("Reaction ~ Days + (1 | Subject)", data=mb.datasets.load("reaction"))
>>> check = mb.checks.group_summary(r, nsim=50, seed=1)
>>> check.table.shape
(18, 4)
"""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .simulate import simulate
from .spec import _grouping

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from .glmm_result import GLMMResult
    from .result import LMMResult
    from .runner import Seed

__all__ = ["DensityCheck", "GroupCheck", "StatisticCheck", "density", "group_summary", "statistic"]

_ALTERNATIVES = ("two-sided", "greater", "less")
_STATS = ("mean", "sd", "median")
_DENSITY_PROBS = (0.05, 0.25, 0.5, 0.75, 0.95)
_BINS = 30


# -- argument checks ------------------------------------------------------------------------
def _check_nsim(nsim) -> int:
    if isinstance(nsim, bool) or not isinstance(nsim, numbers.Integral) or nsim < 1:
        raise ValueError(f"nsim must be a positive integer, got {nsim!r}")
    return int(nsim)


def _check_level(level) -> float:
    if isinstance(level, bool) or not isinstance(level, numbers.Real) or not 0 < level < 1:
        raise ValueError(f"level must be a number strictly between 0 and 1, got {level!r}")
    return float(level)


def _frozen(a) -> np.ndarray:
    a = np.array(a, dtype=float)
    a.flags.writeable = False
    return a


def _observed(result) -> np.ndarray:
    """The response on the scale ``simulate`` draws it: an LMM's offset goes back in."""
    y = np.asarray(result.y, dtype=float)
    offset = result.spec.offset
    if getattr(result, "family", None) is None and offset is not None:
        y = y + np.asarray(offset, dtype=float)
    return y


def _band(values: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Equal-tailed ``level`` interval over axis 0 (the draws), as np.percentile gives it."""
    tail = 100 * (1 - level) / 2
    lo, hi = np.percentile(values, [tail, 100 - tail], axis=0)
    return lo, hi


def _axes(ax):
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots()
    return ax


# -- 1. density overlay --------------------------------------------------------------------
@dataclass(frozen=True)
class DensityCheck:
    """Observed response against ``nsim`` simulated responses (from :func:`density`).

    Attributes
    ----------
    observed : ndarray, shape (n,)
        The observed response (proportions for binomial GLMMs).
    simulated : ndarray, shape (n, nsim)
        The simulated responses, ``mb.simulate(result, nsim, seed)``.
    quantiles : DataFrame
        One row per probability in ``prob``: the ``observed`` quantile, and the
        ``lower``, ``median`` and ``upper`` (``level`` band) of the same quantile
        over the simulated datasets; ``outside`` marks observed quantiles beyond the band.
    share_mean_above, share_sd_above : float
        Share of simulated datasets whose mean (SD) exceeds the observed mean (SD);
        near 0 or 1 says the model misses the response's location (spread).
    level : float
        Coverage of the quantile bands.

    Examples
    --------
    >>> import mixboot as mb
    >>> r = mb.fit("Reaction ~ Days + (1 | Subject)", data=mb.datasets.load("reaction"))
    >>> check = mb.checks.density(r, nsim=20, seed=1)
    >>> isinstance(check, mb.checks.DensityCheck), check.nsim
    (True, 20)
    >>> check.plot()  # doctest: +SKIP
    """

    observed: np.ndarray = field(repr=False)
    simulated: np.ndarray = field(repr=False)
    quantiles: pd.DataFrame
    share_mean_above: float
    share_sd_above: float
    level: float

    @property
    def nsim(self) -> int:
        return self.simulated.shape[1]

    def plot(self, ax: Axes | None = None, *, bins: int = _BINS) -> Axes:
        """Draw each simulated dataset's histogram as a faint outline and the observed one on top.

        All histograms share ``bins`` bins over the range of observed and simulated values;
        returns the matplotlib Axes (a new figure's unless ``ax`` is given).
        """
        ax = _axes(ax)
        edges = np.histogram_bin_edges(
            np.concatenate([self.simulated.ravel(), self.observed]), bins=bins
        )
        for j in range(self.nsim):
            dens, _ = np.histogram(self.simulated[:, j], bins=edges, density=True)
            ax.stairs(
                dens, edges, color="steelblue", alpha=min(0.3, 5 / self.nsim), gid="simulated"
            )
        dens, _ = np.histogram(self.observed, bins=edges, density=True)
        ax.stairs(dens, edges, color="black", linewidth=2, label="observed", gid="observed")
        ax.set_xlabel("response")
        ax.set_ylabel("density")
        ax.legend()
        return ax


def density(
    result: LMMResult | GLMMResult,
    nsim: int = 100,
    seed: Seed = None,
    *,
    level: float = 0.95,
) -> DensityCheck:
    """Compare the observed response's distribution with ``nsim`` simulated ones.

    Parameters
    ----------
    result : LMMResult or GLMMResult
        A fitted model.
    nsim : int
        Number of simulated datasets.
    seed : int, SeedSequence or None
        Seed of :func:`mixboot.simulate`; the same seed gives the same check.
    level : float
        Coverage of the simulated quantile bands, in (0, 1).

    Returns
    -------
    DensityCheck
        ``quantiles`` (observed quantiles against the simulated bands),
        ``share_mean_above``, ``share_sd_above`` and ``plot()``: the interlace
        guide's overlay of observed and simulated histograms.

    Examples
    --------
    >>> import mixboot as mb
    >>> r = mb.fit("Reaction ~ Days + (Days | Subject)", data=mb.datasets.load("reaction"))
    >>> check = mb.checks.density(r, nsim=50, seed=1)
    >>> list(check.quantiles.columns)
    ['prob', 'observed', 'lower', 'median', 'upper', 'outside']
    >>> 0 <= check.share_sd_above <= 1
    True
    >>> check.plot()  # doctest: +SKIP
    """
    nsim, level = _check_nsim(nsim), _check_level(level)
    y = _observed(result)
    Y = simulate(result, nsim, seed)
    probs = np.asarray(_DENSITY_PROBS)
    sim_q = np.quantile(Y, probs, axis=0).T  # (nsim, len(probs))
    lo, hi = _band(sim_q, level)
    obs_q = np.quantile(y, probs)
    table = pd.DataFrame(
        {
            "prob": probs,
            "observed": obs_q,
            "lower": lo,
            "median": np.median(sim_q, axis=0),
            "upper": hi,
            "outside": (obs_q < lo) | (obs_q > hi),
        }
    )
    return DensityCheck(
        observed=_frozen(y),
        simulated=_frozen(Y),
        quantiles=table,
        share_mean_above=float(np.mean(Y.mean(axis=0) > y.mean())),
        share_sd_above=float(np.mean(Y.std(axis=0, ddof=1) > y.std(ddof=1))),
        level=level,
    )


# -- 2. group summaries --------------------------------------------------------------------
@dataclass(frozen=True)
class GroupCheck:
    """A statistic per group against its predictive interval (from :func:`group_summary`).

    Attributes
    ----------
    table : DataFrame
        Indexed by group level: ``observed`` statistic, ``lower`` and ``upper``
        ends of the ``level`` predictive interval over the simulated datasets,
        ``outside`` (observed beyond the interval).
    simulated : ndarray, shape (nsim, n_groups)
        The statistic of each group in each simulated dataset.
    share_outside : float
        Share of groups outside their interval.
    expected_share : float
        ``1 - level``: the share a well-calibrated model leaves outside.
    by, stat : str
        The grouping and the statistic's name.
    level : float
        Coverage of the predictive intervals.

    Examples
    --------
    >>> import mixboot as mb
    >>> r = mb.fit("Reaction ~ Days + (1 | Subject)", data=mb.datasets.load("reaction"))
    >>> check = mb.checks.group_summary(r, by="Subject", stat="mean", nsim=20, seed=1)
    >>> isinstance(check, mb.checks.GroupCheck), len(check.table)
    (True, 18)
    >>> check.plot()  # doctest: +SKIP
    """

    table: pd.DataFrame
    simulated: np.ndarray = field(repr=False)
    share_outside: float
    expected_share: float
    by: str
    stat: str
    level: float

    def plot(self, ax: Axes | None = None) -> Axes:
        """Groups along x: predictive intervals as vertical bars, observed statistics as points.

        Observed values outside their interval are drawn in red; returns the matplotlib Axes.
        """
        ax = _axes(ax)
        t = self.table
        x = np.arange(len(t))
        out = t["outside"].to_numpy()
        ax.vlines(
            x,
            t["lower"],
            t["upper"],
            color="steelblue",
            linewidth=3,
            alpha=0.6,
            label=f"{self.level:.0%} predictive interval",
            gid="interval",
        )
        ax.plot(
            x[~out],
            t["observed"].to_numpy()[~out],
            "o",
            color="black",
            label="observed",
            gid="observed",
        )
        ax.plot(
            x[out],
            t["observed"].to_numpy()[out],
            "o",
            color="red",
            label="observed, outside",
            gid="outside",
        )
        ax.set_xticks(x)
        ax.set_xticklabels([str(g) for g in t.index], rotation=90 if len(t) > 12 else 0)
        ax.set_xlabel(self.by)
        ax.set_ylabel(f"group {self.stat}")
        ax.legend()
        return ax


def _grouping_of(result, by) -> tuple[str, np.ndarray, tuple]:
    """(name, integer codes, levels) of the grouping ``by``: a random-effects grouping factor
    (by its label, ``a:b`` included) or a column of the model's data; None: the first term's."""
    terms = result.spec.terms
    if by is None:
        if not terms:
            raise ValueError("by is required: the model has no grouping factor")
        return terms[0].label, terms[0].codes, terms[0].levels
    for term in terms:
        if term.label == by:
            return term.label, term.codes, term.levels
    data = result.spec.data
    if not isinstance(by, str) or by not in data.columns:
        raise ValueError(
            f"by must be a grouping factor {[t.label for t in terms]} or a column "
            f"of the model's data {list(data.columns)}, got {by!r}"
        )
    codes, levels = _grouping(data, (by,), by)
    return by, codes, levels


def _group_stat(stat, Y: np.ndarray, codes: np.ndarray, ngroups: int) -> np.ndarray:
    """The statistic of each group in each column of Y: an (ncol, ngroups) array.

    Mean and SD are sums over an indicator of the groups, for all columns at once;
    a median or a callable goes group by group.
    """
    counts = np.bincount(codes, minlength=ngroups).astype(float)
    if stat in ("mean", "sd"):
        sums = np.zeros((ngroups, Y.shape[1]))
        np.add.at(sums, codes, Y)
        means = sums / counts[:, None]
        if stat == "mean":
            return means.T
        sq = np.zeros_like(sums)
        np.add.at(sq, codes, (Y - means[codes]) ** 2)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.sqrt(sq / (counts[:, None] - 1)).T
    order = np.argsort(codes, kind="stable")
    rows = np.split(order, np.cumsum(counts.astype(int))[:-1])
    if stat == "median":
        return np.column_stack([np.median(Y[r], axis=0) for r in rows])
    return np.array([[float(stat(Y[r, j])) for r in rows] for j in range(Y.shape[1])])


def group_summary(
    result: LMMResult | GLMMResult,
    by: str | None = None,
    stat: str | Callable[[np.ndarray], float] = "mean",
    nsim: int = 200,
    level: float = 0.95,
    seed: Seed = None,
) -> GroupCheck:
    """Compare a statistic of each group with its predictive interval from ``nsim`` simulations.

    A well-calibrated model leaves about ``1 - level`` of the groups outside;
    many more (for group means) suggests the random-effect variance is
    underestimated, or (for group SDs) that the residual spread differs between groups.

    Parameters
    ----------
    result : LMMResult or GLMMResult
        A fitted model.
    by : str or None
        The groups: a grouping factor of the model (by its label, e.g. ``"Subject"``)
        or a column of the model's data (``result.spec.data``).  None takes the
        model's first grouping factor in lme4's order (the one with most levels).
    stat : {"mean", "sd", "median"} or callable
        The per-group statistic; a callable takes a group's values (1-D array)
        and returns a float.  ``"sd"`` has ``ddof=1`` (NaN for one-row groups).
    nsim : int
        Number of simulated datasets.
    level : float
        Coverage of the equal-tailed predictive intervals, in (0, 1).
    seed : int, SeedSequence or None
        Seed of :func:`mixboot.simulate`; the same seed gives the same check.

    Returns
    -------
    GroupCheck
        ``table`` (observed, lower, upper, outside per group), ``share_outside``,
        ``expected_share`` (``1 - level``) and ``plot()``.

    Examples
    --------
    >>> import mixboot as mb
    >>> r = mb.fit("Reaction ~ Days + (1 | Subject)", data=mb.datasets.load("reaction"))
    >>> check = mb.checks.group_summary(r, by="Subject", stat="sd", nsim=50, seed=1)
    >>> list(check.table.columns)
    ['observed', 'lower', 'upper', 'outside']
    >>> check.expected_share
    0.05...
    >>> check.plot()  # doctest: +SKIP
    """
    nsim, level = _check_nsim(nsim), _check_level(level)
    if not (callable(stat) or (isinstance(stat, str) and stat in _STATS)):
        raise ValueError(f"stat must be one of {list(_STATS)} or a callable, got {stat!r}")
    name, codes, levels = _grouping_of(result, by)
    codes = np.asarray(codes, dtype=np.int64)
    y = _observed(result)
    Y = simulate(result, nsim, seed)
    observed = _group_stat(stat, y[:, None], codes, len(levels))[0]
    sims = _group_stat(stat, Y, codes, len(levels))
    lo, hi = _band(sims, level)
    outside = (observed < lo) | (observed > hi)
    table = pd.DataFrame(
        {"observed": observed, "lower": lo, "upper": hi, "outside": outside},
        index=pd.Index(levels, name=name),
    )
    stat_name = stat if isinstance(stat, str) else getattr(stat, "__name__", "statistic")
    return GroupCheck(
        table=table,
        simulated=_frozen(sims),
        share_outside=float(outside.mean()),
        expected_share=1 - level,
        by=name,
        stat=stat_name,
        level=level,
    )


# -- 3. a scalar statistic -----------------------------------------------------------------
@dataclass(frozen=True)
class StatisticCheck:
    """A scalar statistic of the observed response against its simulated values
    (from :func:`statistic`).

    Attributes
    ----------
    observed : float
        ``T(y, result)`` of the observed response.
    simulated : ndarray
        ``T`` of each simulated response, NaN values left out.
    n_nan : int
        Simulated responses whose ``T`` was NaN (left out of the p-values).
    p_greater, p_less : float
        ``(1 + #{T* >= T}) / (1 + m)`` and ``(1 + #{T* <= T}) / (1 + m)``, m the
        number of non-NaN ``T*``.
    p_value : float
        The p-value of ``alternative``: ``p_greater``, ``p_less``, or for
        "two-sided" ``min(1, 2 * min(p_greater, p_less))``.
    alternative : str

    Examples
    --------
    >>> import mixboot as mb
    >>> r = mb.fit("Reaction ~ Days + (1 | Subject)", data=mb.datasets.load("reaction"))
    >>> check = mb.checks.statistic(r, lambda y, res: float(y.max()), nsim=19, seed=1)
    >>> isinstance(check, mb.checks.StatisticCheck), bool(check.p_value >= 1 / 20)
    (True, True)
    >>> check.plot()  # doctest: +SKIP
    """

    observed: float
    simulated: np.ndarray = field(repr=False)
    n_nan: int
    p_greater: float
    p_less: float
    p_value: float
    alternative: str

    @property
    def nsim(self) -> int:
        """Simulations that entered the p-values (non-NaN ``T*``)."""
        return self.simulated.size

    def plot(self, ax: Axes | None = None, *, bins: int = _BINS) -> Axes:
        """Histogram of the simulated ``T*`` with the observed ``T`` as a vertical line;
        returns the matplotlib Axes."""
        ax = _axes(ax)
        ax.hist(
            self.simulated,
            bins=bins,
            color="steelblue",
            alpha=0.7,
            label="simulated",
            gid="simulated",
        )
        ax.axvline(
            self.observed,
            color="black",
            linewidth=2,
            gid="observed",
            label=f"observed (p = {self.p_value:.3g}, {self.alternative})",
        )
        ax.set_xlabel("T")
        ax.set_ylabel("count")
        ax.legend()
        return ax


def statistic(
    result: LMMResult | GLMMResult,
    T: Callable[[np.ndarray, Any], float],
    nsim: int = 500,
    seed: Seed = None,
    alternative: str = "two-sided",
) -> StatisticCheck:
    """Simulation p-value of a scalar statistic ``T(y, result)``.

    ``T`` is evaluated on the observed response and on each of ``nsim``
    simulated responses.  The p-values count the observed dataset among the
    simulations (the +1 correction), so none is below ``1 / (1 + nsim)``.

    Parameters
    ----------
    result : LMMResult or GLMMResult
        A fitted model.
    T : callable
        ``T(y, result) -> float``, ``y`` an (n,) response array on the scale
        :func:`mixboot.simulate` returns (proportions for binomial GLMMs).
        A NaN for a simulated response is counted in ``n_nan``, left out, and warned about.
    nsim : int
        Number of simulated datasets.
    seed : int, SeedSequence or None
        Seed of :func:`mixboot.simulate`; the same seed gives the same check.
    alternative : {"two-sided", "greater", "less"}
        "greater": the observed ``T`` is larger than the model predicts;
        "two-sided": twice the smaller one-sided p-value (at most 1).

    Returns
    -------
    StatisticCheck
        ``observed``, ``simulated``, ``p_value``, ``p_greater``, ``p_less`` and ``plot()``.

    Examples
    --------
    Residual kurtosis, as in the interlace guide:

    >>> import mixboot as mb
    >>> from scipy.stats import kurtosis
    >>> r = mb.fit("Reaction ~ Days + (Days | Subject)", data=mb.datasets.load("reaction"))
    >>> check = mb.checks.statistic(r, lambda y, res: kurtosis(y - res.fittedvalues),
    ...                             nsim=99, seed=1)
    >>> 0.01 <= check.p_value <= 1
    True
    >>> check.plot()  # doctest: +SKIP
    """
    nsim = _check_nsim(nsim)
    if not callable(T):
        raise TypeError(f"T must be a callable T(y, result) -> float, got {T!r}")
    if alternative not in _ALTERNATIVES:
        raise ValueError(f"alternative must be one of {list(_ALTERNATIVES)}, got {alternative!r}")
    observed = float(T(_observed(result), result))
    if np.isnan(observed):
        raise ValueError("T of the observed response is NaN")
    Y = simulate(result, nsim, seed)
    sims = np.array([float(T(Y[:, j], result)) for j in range(nsim)])
    nan = np.isnan(sims)
    if nan.all():
        raise ValueError(f"T is NaN for all {nsim} simulated responses")
    if nan.any():
        warnings.warn(
            f"T is NaN for {int(nan.sum())} of {nsim} simulated responses; "
            "they are left out of the p-values",
            RuntimeWarning,
            stacklevel=2,
        )
    sims = sims[~nan]
    m = sims.size
    p_greater = (1 + int(np.sum(sims >= observed))) / (1 + m)
    p_less = (1 + int(np.sum(sims <= observed))) / (1 + m)
    p_value = {
        "greater": p_greater,
        "less": p_less,
        "two-sided": min(1.0, 2 * min(p_greater, p_less)),
    }[alternative]
    return StatisticCheck(
        observed=observed,
        simulated=_frozen(sims),
        n_nan=int(nan.sum()),
        p_greater=p_greater,
        p_less=p_less,
        p_value=p_value,
        alternative=alternative,
    )
