"""Drawing for bootstrap and power results, with matplotlib imported only when a plot is drawn.

``import mixboot`` never imports matplotlib (an optional extra: ``pip install
'mixboot[plot]'``).  The result classes have thin ``plot`` methods that call the
functions here: :meth:`mixboot.BootResult.plot`, :meth:`~mixboot.BootResult.ridgeplot`,
:meth:`~mixboot.BootResult.pairplot`, :meth:`mixboot.PowerResult.plot`,
:meth:`mixboot.PowerCurve.plot` and :meth:`mixboot.PowerGrid.plot`.  Every
function draws into ``ax`` when one is given and returns the Axes it drew on
(the Figure when it drew several panels).

The artists carry a ``gid`` naming what they show (``"estimate"``, ``"lower"``,
``"upper"``, ``"density:<name>"``, ``"interval:<name>"``, ``"singular"``,
``"band"``, ``"target"``, ...), so code and tests can find them:

>>> import matplotlib
>>> matplotlib.use("Agg")
>>> import mixboot as mb
>>> fit = mb.fit("Reaction ~ 1 + Days + (1 + Days | Subject)",
...              data=mb.datasets.load("reaction"), REML=False)
>>> boot = mb.bootMer(fit, B=50, seed=1)
>>> ax = boot.plot(params="Days")
>>> [line.get_gid() for line in ax.get_lines()]
['estimate', 'lower', 'upper']
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

__all__ = ["boot_panels", "ridge", "pairs", "power_point", "power_curve", "power_heatmap"]

KINDS = ("hist", "density", "ridge")
_ESTIMATE = dict(color="black", linewidth=1.5)
_BOUND = dict(color="C3", linestyle="--", linewidth=1.2)


def pyplot(what: str):
    """``matplotlib.pyplot``, or an ImportError that says how to install it."""
    try:
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError(
            f"{what} needs matplotlib: pip install 'mixboot[plot]' (or pip install matplotlib)"
        ) from None
    return plt


# --------------------------------------------------------------------------- bootstrap
def _params(boot, params, default) -> list[str]:
    """The named parameters (one name or a list), checked against :meth:`reported`'s."""
    known = list(boot.reported(theta=True).columns)
    if params is None:
        return list(default)
    names = [params] if isinstance(params, str) else list(params)
    if not names:
        raise ValueError("params must name at least one parameter")
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"params: unknown parameter(s) {unknown}; this result has {known}")
    return names


def fixed_effects(boot) -> list[str]:
    """Names of the fixed effects among :meth:`reported`'s columns (all names without them).

    lme4's order: random-effect SDs and correlations (named differently from their
    ``tbl`` columns), then ``sigma`` (not for a GLMM), then the fixed effects.
    """
    rep = boot.meta.get("reported")
    if rep is None:
        return list(boot.names)
    pairs_ = list(zip(rep["names"], rep["columns"]))
    k = 0
    while k < len(pairs_) and pairs_[k][0] != pairs_[k][1]:
        k += 1
    if k < len(pairs_) and pairs_[k][0] == "sigma":
        k += 1
    return [n for n, _ in pairs_[k:]]


def _samples(boot, names):
    """Replicates and original estimates of ``names`` on the reported scale."""
    samples = boot.reported(theta=True)[names]
    estimate = boot.reported_estimate(theta=True).reindex(names)
    return samples, estimate


def _bounds(boot, names, level, method) -> pd.DataFrame:
    theta = any(n.startswith("theta_") for n in names) and "reported" in boot.meta
    return boot.confint(method=method, level=level, theta=theta).loc[names]


def _density(values: np.ndarray, grid_size: int = 256):
    """Gaussian kernel density on the range of the values (bounded parameters such as a
    correlation pile up at their bound; a density past the data would hide that)."""
    from scipy import stats

    values = values[np.isfinite(values)]
    lo, hi = (values.min(), values.max()) if values.size else (0.0, 0.0)
    if values.size < 2 or hi - lo <= 1e-12 * max(1.0, abs(hi)):
        return None
    x = np.linspace(lo, hi, grid_size)
    try:
        return x, stats.gaussian_kde(values)(x)
    except np.linalg.LinAlgError:
        return None


def _interval_label(level, method) -> str:
    return f"{level:.0%} {method} interval"


def boot_panels(boot, *, kind="hist", params=None, level=0.95, method="perc", ax=None):
    """One panel per parameter: histogram or density of the replicates, the estimate
    and the bootstrap interval as vertical lines.  See :meth:`mixboot.BootResult.plot`."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if kind == "ridge":
        return ridge(boot, params=params, level=level, method=method, ax=ax)
    plt = pyplot("BootResult.plot")
    names = _params(boot, params, boot.reported().columns)
    axes = _panel_axes(plt, ax, len(names))
    samples, estimate = _samples(boot, names)
    bounds = _bounds(boot, names, level, method)
    for a, name in zip(axes, names):
        values = samples[name].to_numpy()
        finite = values[np.isfinite(values)]
        if kind == "hist":
            a.hist(finite, bins="auto", color="C0", alpha=0.6, gid=f"hist:{name}")
            a.set_ylabel("replicates")
        else:
            curve = _density(values)
            if curve is not None:
                a.plot(*curve, color="C0", gid=f"density:{name}")
                a.fill_between(*curve, color="C0", alpha=0.25)
            a.set_ylabel("density")
        lo, hi = bounds.loc[name, "lower"], bounds.loc[name, "upper"]
        a.axvspan(lo, hi, color="C3", alpha=0.08, gid="span")
        a.axvline(estimate[name], gid="estimate", label="estimate", **_ESTIMATE)
        a.axvline(lo, gid="lower", label=_interval_label(level, method), **_BOUND)
        a.axvline(hi, gid="upper", label="_upper", **_BOUND)
        a.set_xlabel(name)
    axes[0].legend(fontsize="small", frameon=False)
    if len(axes) == 1:
        return axes[0]
    return axes[0].figure


def _panel_axes(plt, ax, n: int) -> list:
    """``n`` axes: the ones given (one Axes, or a sequence of n), else a new grid."""
    if ax is None:
        ncols = min(n, 3)
        nrows = math.ceil(n / ncols)
        fig, grid = plt.subplots(
            nrows, ncols, figsize=(3.2 * ncols, 2.6 * nrows), squeeze=False, layout="constrained"
        )
        flat = list(grid.ravel())
        for extra in flat[n:]:
            extra.remove()
        return flat[:n]
    given = list(np.ravel(np.asarray(ax, dtype=object)))
    if len(given) != n:
        raise ValueError(f"ax: {n} parameter(s) to draw but {len(given)} Axes given")
    return given


def ridge(boot, *, params=None, include_intercept=True, level=0.95, method="shortest", ax=None):
    """Densities stacked vertically on one value axis (MixedModelsMakie's ``ridgeplot``).
    See :meth:`mixboot.BootResult.ridgeplot`."""
    plt = pyplot("BootResult.ridgeplot")
    names = _params(boot, params, fixed_effects(boot))
    if not include_intercept:
        names = [n for n in names if n != "(Intercept)"]
    if not names:
        raise ValueError("no parameter left to draw (only the intercept was named)")
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 0.9 + 0.7 * len(names)), layout="constrained")
    samples, estimate = _samples(boot, names)
    bounds = _bounds(boot, names, level, method)
    top = len(names) - 1
    for k, name in enumerate(names):
        base = top - k  # the first parameter on top, as a coefficient table reads
        curve = _density(samples[name].to_numpy())
        if curve is not None:
            x, d = curve
            height = base + 0.85 * d / d.max()
            ax.fill_between(x, base, height, color=f"C{k % 10}", alpha=0.35, gid=f"density:{name}")
            ax.plot(x, height, color=f"C{k % 10}", linewidth=1)
        ax.plot(
            [bounds.loc[name, "lower"], bounds.loc[name, "upper"]],
            [base, base],
            color="black",
            linewidth=3,
            solid_capstyle="butt",
            gid=f"interval:{name}",
            label=_interval_label(level, method) if k == 0 else None,
        )
        ax.plot(
            [estimate[name]],
            [base],
            marker="o",
            color="black",
            linestyle="none",
            gid=f"estimate:{name}",
            label="estimate" if k == 0 else None,
        )
    ax.axvline(0.0, color="grey", linewidth=0.8, linestyle=":", gid="zero")
    ax.set_yticks(range(top, -1, -1), names)
    ax.set_ylim(-0.3, top + 1.1)
    ax.set_xlabel("value")
    ax.legend(fontsize="small", frameon=False, loc="upper right")
    return ax


def pairs(boot, x: str, y: str, *, ax=None):
    """Scatter of two parameters' replicates, singular refits marked.
    See :meth:`mixboot.BootResult.pairplot`."""
    plt = pyplot("BootResult.pairplot")
    _params(boot, [x, y], ())
    if ax is None:
        _, ax = plt.subplots(layout="constrained")
    samples, estimate = _samples(boot, [x, y])
    xs, ys = samples[x].to_numpy(), samples[y].to_numpy()
    usable = np.isfinite(xs) & np.isfinite(ys)
    singular = boot.issingular() & usable
    regular = usable & ~singular
    ax.scatter(
        xs[regular],
        ys[regular],
        s=12,
        color="C0",
        alpha=0.6,
        label=f"non-singular ({int(regular.sum())})",
        gid="non-singular",
    )
    ax.scatter(
        xs[singular],
        ys[singular],
        s=24,
        color="C3",
        marker="x",
        label=f"singular ({int(singular.sum())})",
        gid="singular",
    )
    ax.plot(
        [estimate[x]],
        [estimate[y]],
        marker="*",
        markersize=14,
        color="black",
        linestyle="none",
        label="estimate",
        gid="estimate",
    )
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.legend(fontsize="small")
    return ax


# --------------------------------------------------------------------------- power
def _target_line(ax, target) -> None:
    if target is not None:
        if not 0 <= target <= 1:
            raise ValueError(f"target must be a power between 0 and 1, got {target!r}")
        ax.axhline(
            target,
            color="grey",
            linestyle="--",
            linewidth=1,
            gid="target",
            label=f"target {target:g}",
        )


def _power_title(result) -> str:
    from .power import _test_title

    return (
        f"{_test_title(result.method, result.df)} of {result.test!r}, "
        f"alpha = {result.alpha:g}, nsim = {result.nsim}"
    )


def power_point(result, *, target=None, ax=None):
    """The power estimate with its Clopper-Pearson interval.
    See :meth:`mixboot.PowerResult.plot`."""
    plt = pyplot("PowerResult.plot")
    if ax is None:
        _, ax = plt.subplots(figsize=(3.5, 4), layout="constrained")
    bar = ax.errorbar(
        [0],
        [result.power],
        yerr=[[result.power - result.lower], [result.upper - result.power]],
        fmt="o",
        color="C0",
        capsize=6,
        label="power (95% CI)",
    )
    bar.lines[0].set_gid("power")
    bar.lines[2][0].set_gid("interval")
    _target_line(ax, target)
    ax.set_xlim(-1, 1)
    ax.set_xticks([0], [result.test])
    ax.set_ylim(0, 1)
    ax.set_ylabel("power")
    ax.set_title(_power_title(result), fontsize="small")
    ax.legend(fontsize="small", loc="lower right")
    return ax


def power_curve(curve, *, target=0.8, ax=None):
    """Power against size with its Clopper-Pearson band.  See :meth:`mixboot.PowerCurve.plot`."""
    plt = pyplot("PowerCurve.plot")
    if ax is None:
        _, ax = plt.subplots(layout="constrained")
    t = curve.table
    ax.fill_between(
        t["size"],
        t["lower"],
        t["upper"],
        color="C0",
        alpha=0.25,
        label="95% CI (Clopper-Pearson)",
        gid="band",
    )
    ax.plot(t["size"], t["power"], marker="o", color="C0", label="power", gid="power")
    _target_line(ax, target)
    ax.set_ylim(0, 1)
    ax.set_xlabel(f"number of levels of {curve.along}")
    ax.set_ylabel("power")
    ax.set_title(_power_title(curve.results[0]), fontsize="small")
    ax.legend(loc="lower right", fontsize="small")
    return ax


def power_heatmap(grid, *, ax=None):
    """Heat map of power over two sizes, each cell annotated.  See :meth:`mixboot.PowerGrid.plot`."""
    plt = pyplot("PowerGrid.plot")
    if ax is None:
        _, ax = plt.subplots(layout="constrained")
    first, second = grid.along
    wide = grid.table.pivot(index="size2", columns="size1", values="power")
    values = wide.to_numpy(dtype=float)
    image = ax.imshow(
        values, origin="lower", cmap="viridis", vmin=0, vmax=1, aspect="auto", gid="power"
    )
    for i, j in np.ndindex(values.shape):
        v = values[i, j]
        ax.text(
            j,
            i,
            "n/a" if np.isnan(v) else f"{v:.2f}",
            ha="center",
            va="center",
            color="black" if v >= 0.6 else "white",
            gid="annotation",
        )
    ax.set_xticks(range(wide.shape[1]), [str(s) for s in wide.columns])
    ax.set_yticks(range(wide.shape[0]), [str(s) for s in wide.index])
    ax.set_xlabel(f"number of levels of {first}")
    ax.set_ylabel(f"number of levels of {second}")
    ax.set_title(_power_title(grid.results[0]), fontsize="small")
    ax.figure.colorbar(image, ax=ax, label="power")
    return ax
