"""Power analysis by simulation: how often a test rejects under assumed parameters.

Power for a fixed effect is estimated as simr and the interlace guide do it: simulate a
response from the model's parameters, refit the model, test the effect, and
count the rejections.  Replicate i draws from child i of
``SeedSequence(seed)`` and replicates are refitted in chunks whose size
depends only on the model, so the p-values are the same for any ``n_jobs``.

Tests (``method``; by default the model's or fit's ``ddf``, so that power
agrees with the p-values its summary shows):

* ``"satterthwaite"``: the refit's t statistic ``beta_j / se_j`` on
  Satterthwaite's denominator df, for a term with k columns the F test of those
  columns (Fai & Cornelius' df), as lmerTest's ``summary``/``anova`` compute them
  on that refit (:mod:`mixboot.inference`).  The refit uses the model's own
  criterion (REML or ML).
* ``"kr"``: the same with Kenward-Roger's adjusted standard error and df
  (pbkrtest's); REML models only.  For k columns, ``F = b' (L Phi_A L')^-1 b / k``
  (unscaled, as lmerTest's) on Kenward-Roger's df.
* ``"wald"``: the refit's Wald statistic with a normal reference,
  ``p = 2 Phi(-|beta_j / se_j|)`` for one coefficient; for a term with k
  columns ``W = b' V^-1 b`` on chi-square(k).  The refit uses the model's own
  criterion (REML or ML).  With few groups z is optimistic: its power exceeds
  that of the t tests users read in the fit's summary.
* ``"lrt"``: the likelihood-ratio statistic of the model against the model
  without the tested columns, both refitted by ML, on chi-square(k).
* ``"pb"``: the same statistic with a parametric-bootstrap reference for each
  simulated data set: ``pb_B`` responses are drawn from the reduced model fitted
  to that data set, and ``p = (1 + #{LRT* >= LRT}) / (1 + valid LRT*)``.  This is
  nested simulation, ``nsim * pb_B`` pairs of refits.

The t and F tests compute their df for each refit on its own (a result built for
that simulated response), so they cost more per replicate than ``"wald"``.

GLMMs (a model from ``mb.model(..., family=...)`` or a ``glmer``-style fit):
responses are simulated on the fitted scale and refitted by maximum likelihood
(the model's ``nAGQ``) from the assumed (theta, beta), as lme4's ``refit``.
The default method is ``"wald"``, the z test of glmer's summary; ``"lrt"`` and
``"pb"`` as above; ``"satterthwaite"`` and ``"kr"`` are for linear mixed models
only.  The Wald standard errors of a GLMM refit come from the penalized
information given theta, ``(R_X' R_X)^-1`` at the refit's weights (lme4's
``use.hessian = FALSE``), not from the finite-difference Hessian over (theta,
beta) that the fit's summary uses: a Hessian per replicate would cost more than
the refit.  The two agree closely unless theta is poorly determined.

Replicates whose simulation, refit or statistic fails, and refits that do not
converge, are left out of the estimate and counted (never silently).  Singular
refits (a variance at its boundary) are kept, as simr keeps them, and counted.

>>> import mixboot as mb
>>> d = mb.design.nested(groups=40, per_group=5, between={"treatment": [0.0, 1.0]},
...                      group="subject")
>>> m = mb.model("y ~ treatment + (1 | subject)", d,
...              beta={"(Intercept)": 1.0, "treatment": 0.5}, sigma=1.0, re={"subject": 1.0})
>>> res = mb.power(m, "treatment", nsim=200, seed=1)
>>> 0.2 < res.power < 0.6 and res.n_valid == 200
True
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy import special, stats

from . import _html, runner
from ._version import __version__
from .compare import (
    TIE_TOL,
    columns_to_drop,
    is_glmm,
    reduced_model,
    refit_columns,
    simulate_responses,
)
from .design import extend
from .glmm_result import GLMMResult
from .inference import _EXPECTED_MAX_N, contrast_test
from .model import LinearMixedModel
from .optimize import OptSummary
from .parameters import TRIALS_COLUMN, model
from .result import SINGULAR_TOL, LMMResult, build_result
from .runner import child_streams
from .workspace import scale_tail, tail_block, term1_blocks

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from ._typing import Client, PathLike

__all__ = [
    "power",
    "power_curve",
    "power_grid",
    "PowerResult",
    "PowerCurve",
    "PowerGrid",
    "tested_columns",
]

METHODS = ("satterthwaite", "kr", "wald", "lrt", "pb")
_METHOD_TITLES = {
    "satterthwaite": "Satterthwaite t test",
    "kr": "Kenward-Roger t test",
    "wald": "Wald test",
    "lrt": "likelihood-ratio (chi-square) test",
    "pb": "parametric-bootstrap LR test",
}
# The fit's ddf (mixboot.inference.check_ddf names) -> the power method of that test.
_DDF_METHODS = {"satterthwaite": "satterthwaite", "kenward-roger": "kr", "wald": "wald"}
# Methods whose refits use the model's own criterion (the others refit by ML).
_OWN_CRITERION = ("satterthwaite", "kr", "wald")
# Outer replicates per chunk for method="pb": each carries pb_B refit pairs.
_PB_CHUNK = 4


# --------------------------------------------------------------------------- results
def clopper_pearson(successes: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Exact binomial interval: the Beta quantiles that invert two one-sided tests."""
    if n == 0:
        return np.nan, np.nan
    a = 1 - level
    lower = (
        0.0 if successes == 0 else float(special.betaincinv(successes, n - successes + 1, a / 2))
    )
    upper = (
        1.0
        if successes == n
        else float(special.betaincinv(successes + 1, n - successes, 1 - a / 2))
    )
    return lower, upper


@dataclass(frozen=True, eq=False)
class PowerResult:
    """Estimated power of a test under the assumed parameters.

    ``power`` = significant / ``n_valid`` with a 95% Clopper-Pearson interval
    (``lower``, ``upper``).  ``pvalues`` holds one p-value per replicate, NaN
    for the excluded ones (failed or not converged; see ``failures``).
    Singular refits are included in the estimate; ``n_singular`` counts them.
    ``seed`` is the entropy of the root seed sequence: passing it back as
    ``seed=`` repeats the run.  For a GLMM, ``family`` names family and link
    ("binomial(logit)"), ``beta`` is on the link scale and ``sigma`` is NaN.

    Examples
    --------
    >>> import mixboot as mb
    >>> d = mb.design.nested(groups=20, per_group=5, between={"treatment": [0.0, 1.0]},
    ...                      group="subject")
    >>> m = mb.model("y ~ treatment + (1 | subject)", d,
    ...              beta={"(Intercept)": 1.0, "treatment": 0.5}, sigma=1.0, re={"subject": 1.0})
    >>> res = mb.power(m, "treatment", nsim=50, seed=1)
    >>> bool(res.lower <= res.power <= res.upper), res.nsim
    (True, 50)
    """

    power: float
    lower: float
    upper: float
    n_valid: int
    n_significant: int
    n_failed: int
    n_nonconverged: int
    n_singular: int
    test: str
    columns: tuple[str, ...]
    df: int
    method: str
    alpha: float
    nsim: int
    seed: int
    beta: dict
    sigma: float
    theta: np.ndarray = field(repr=False)
    varcorr: pd.DataFrame = field(repr=False)
    formula: str = field(repr=False)
    nobs: int = field(repr=False)
    ngroups: dict = field(repr=False)
    REML: bool = field(repr=False)
    pb_B: int | None = field(repr=False)
    pvalues: np.ndarray = field(repr=False)
    converged: np.ndarray = field(repr=False)
    singular: np.ndarray = field(repr=False)
    failures: pd.DataFrame = field(repr=False)
    family: str | None = field(default=None, repr=False)

    def confint(self, level: float = 0.95) -> tuple[float, float]:
        """Clopper-Pearson interval for the power at another level."""
        if not 0 < level < 1:
            raise ValueError(f"level must be between 0 and 1, got {level!r}")
        return clopper_pearson(self.n_significant, self.n_valid, level)

    def plot(self, ax: Axes | None = None, target: float | None = None) -> Axes:
        """The power estimate with its 95% Clopper-Pearson interval as an error bar.

        Parameters
        ----------
        ax : matplotlib Axes, optional
            Where to draw; by default a new figure.
        target : float, optional
            A target power drawn as a dashed horizontal line (e.g. 0.8).

        Returns
        -------
        matplotlib Axes
            With the estimate as a point and its interval as an error bar.

        Examples
        --------
        >>> import mixboot as mb
        >>> d = mb.design.nested(groups=30, per_group=4, x={"x": [0, 1, 2, 3]})
        >>> m = mb.model("y ~ x + (1 | group)", d, beta=[0.0, 0.3], sigma=1.0, re={"group": 0.5})
        >>> ax = mb.power(m, "x", nsim=50, seed=2).plot(target=0.8)
        >>> [line.get_gid() for line in ax.get_lines()][-1]
        'target'
        """
        from .plots import power_point

        return power_point(self, target=target, ax=ax)

    def summary(self) -> str:
        groups = ", ".join(f"{g} {k}" for g, k in self.ngroups.items())
        criterion = "REML" if self.REML and self.method in _OWN_CRITERION else "ML"
        what = (
            f"coefficient {self.columns[0]!r}"
            if self.df == 1
            else f"term {self.test!r} ({self.df} columns)"
        )
        lines = [
            f"Power by simulation: {_test_title(self.method, self.df)} of {what}, "
            f"alpha = {self.alpha:g}",
            f"  model: {self.formula}   ({self.nobs} observations; groups: {groups}; "
            f"refitted by {criterion})",
        ]
        if self.family is not None:
            lines[-1] = lines[-1].replace("; refitted by", f"; {self.family}; refitted by")
        if self.method == "pb":
            lines[-1] += f"; {self.pb_B} bootstrap responses per data set"
        beta = ", ".join(f"{k} = {v:.4g}" for k, v in self.beta.items())
        lines.append(f"  assumed fixed effects: {beta}")
        lines.append("  assumed random effects: " + _varcorr_text(self.varcorr))
        if np.isfinite(self.power):
            lines.append(
                f"  power: {self.power:.4f}   95% CI [{self.lower:.4f}, {self.upper:.4f}] "
                "(Clopper-Pearson)"
            )
        else:
            lines.append("  power: not available (no valid replicate)")
        lines.append(
            f"  {self.n_significant} significant of {self.n_valid} valid replicates "
            f"(nsim {self.nsim}, seed {self.seed})"
        )
        lines.append(
            f"  excluded: {self.n_failed} failed, {self.n_nonconverged} not converged; "
            f"included singular fits: {self.n_singular}"
        )
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (
            f"<PowerResult {self.method} test of {self.test!r}: power {self.power:.4f} "
            f"[{self.lower:.4f}, {self.upper:.4f}], {self.n_valid}/{self.nsim} valid, "
            f"alpha {self.alpha:g}>"
        )

    def _repr_html_(self) -> str:
        return _html.power(self)


def _test_title(method: str, df: int) -> str:
    """ "Satterthwaite t test" ("... F test" for a term), "Wald test", ..."""
    title = _METHOD_TITLES[method]
    return (
        title.replace(" t test", " F test")
        if method in ("satterthwaite", "kr") and df > 1
        else title
    )


def _varcorr_text(vc: pd.DataFrame) -> str:
    parts = []
    for row in vc.itertuples(index=False):
        if row.grp == "Residual":
            parts.append(f"residual sd {row.sdcor:.4g}")
        elif row.var2 is None or (isinstance(row.var2, float) and np.isnan(row.var2)):
            parts.append(f"{row.grp} {row.var1} sd {row.sdcor:.4g}")
        else:
            parts.append(f"{row.grp} corr({row.var1}, {row.var2}) {row.sdcor:.3g}")
    return "; ".join(parts)


class PowerCurve(pd.DataFrame):
    """Power at several sizes of one grouping factor: a DataFrame, one row per size.

    Columns: size, power, lower, upper, n_valid, n_failed, n_nonconverged,
    n_singular.  ``along`` names the grouping factor, ``results`` holds the
    PowerResult of each size; ``plot()`` draws the curve.  Operations on it
    give plain DataFrames.

    Examples
    --------
    >>> import mixboot as mb
    >>> d = mb.design.nested(groups=20, per_group=5, between={"treatment": [0.0, 1.0]},
    ...                      group="subject")
    >>> m = mb.model("y ~ treatment + (1 | subject)", d,
    ...              beta={"(Intercept)": 1.0, "treatment": 0.5}, sigma=1.0, re={"subject": 1.0})
    >>> curve = mb.power_curve(m, "treatment", sizes=[10, 20], nsim=30, seed=1)
    >>> curve.along, list(curve.columns[:4])
    ('subject', ['size', 'power', 'lower', 'upper'])
    >>> curve.plot(target=0.8)  # doctest: +SKIP
    """

    _metadata = ["along", "results"]

    @property
    def _constructor(self):
        return pd.DataFrame

    @classmethod
    def build(cls, along: str, table: pd.DataFrame, results: Iterable[PowerResult]) -> PowerCurve:
        out = cls(table)
        out.along = along
        out.results = tuple(results)
        return out

    @property
    def table(self) -> pd.DataFrame:
        """The rows as a plain DataFrame."""
        return pd.DataFrame(self)

    def plot(self, ax: Axes | None = None, target: float | None = 0.8) -> Axes:
        """Power against size with its 95% Clopper-Pearson band and a target power line.

        Parameters
        ----------
        ax : matplotlib Axes, optional
            Where to draw; by default a new figure.
        target : float or None
            Power drawn as a dashed horizontal line (None: no line).

        Returns
        -------
        matplotlib Axes
            With the curve, its band and the target line.

        Examples
        --------
        >>> import mixboot as mb
        >>> d = mb.design.nested(groups=20, per_group=5, between={"treatment": [0.0, 1.0]},
        ...                      group="subject")
        >>> m = mb.model("y ~ treatment + (1 | subject)", d,
        ...              beta={"(Intercept)": 1.0, "treatment": 0.5}, sigma=1.0,
        ...              re={"subject": 1.0})
        >>> curve = mb.power_curve(m, "treatment", sizes=[20, 40], nsim=50, seed=1)
        >>> curve.plot(target=0.8).get_ylabel()
        'power'
        """
        from .plots import power_curve as draw

        return draw(self, target=target, ax=ax)

    def summary(self) -> str:
        first = self.results[0]
        head = (
            f"Power curve along {self.along!r}: {_test_title(first.method, first.df)} of "
            f"{first.test!r}, alpha = {first.alpha:g}, nsim = {first.nsim}, seed {first.seed}"
        )
        body = self.table.to_string(index=False, float_format=lambda x: f"{x:.4f}")
        return head + "\n" + body

    def __repr__(self) -> str:
        return f"<PowerCurve along {self.along!r}>\n" + self.table.to_string(index=False)

    def _repr_html_(self) -> str:  # notebooks: the title line, then the table
        return _html.power_curve(self)


@dataclass(frozen=True, eq=False)
class PowerGrid:
    """Power over every combination of sizes of two grouping factors (:func:`power_grid`).

    ``table``: one row per combination, columns size1 (levels of ``along[0]``),
    size2 (levels of ``along[1]``), power, lower, upper (95% Clopper-Pearson),
    n_valid.  ``results`` holds the PowerResult of each row, in the table's order;
    ``plot()`` draws a heat map.

    Examples
    --------
    >>> import mixboot as mb
    >>> d = mb.design.crossed(subjects=10, items=6, within={"cond": ["a", "b"]})
    >>> m = mb.model("y ~ cond + (1 | subject) + (1 | item)", d, beta=[0.0, 0.4],
    ...              sigma=1.0, re={"subject": 0.5, "item": 0.3})
    >>> grid = mb.power_grid(m, "cond", sizes={"subject": [10, 20], "item": [6]},
    ...                      nsim=20, seed=1, method="wald")
    >>> len(grid.results), list(grid.table.columns[:3])
    (2, ['size1', 'size2', 'power'])
    >>> grid.plot()  # doctest: +SKIP
    """

    along: tuple[str, str]
    table: pd.DataFrame
    results: tuple = field(repr=False)

    def plot(self, ax: Axes | None = None) -> Axes:
        """Heat map of the power (size1 across, size2 up), each cell annotated, with a colorbar.

        Parameters
        ----------
        ax : matplotlib Axes, optional
            Where to draw; by default a new figure.

        Returns
        -------
        matplotlib Axes
            With the heat map (its colorbar is a second Axes of the figure).

        Examples
        --------
        >>> import mixboot as mb
        >>> d = mb.design.crossed(subjects=10, items=6, within={"cond": ["a", "b"]})
        >>> m = mb.model("y ~ cond + (1 | subject) + (1 | item)", d, beta=[0.0, 0.4],
        ...              sigma=1.0, re={"subject": 0.5, "item": 0.3})
        >>> grid = mb.power_grid(m, "cond", sizes={"subject": [10, 20], "item": [6, 12]},
        ...                      nsim=20, seed=1, method="wald")
        >>> len(grid.plot().texts)
        4
        """
        from .plots import power_heatmap

        return power_heatmap(self, ax=ax)

    def summary(self) -> str:
        first = self.results[0]
        head = (
            f"Power grid over {self.along[0]!r} (size1) and {self.along[1]!r} (size2): "
            f"{_test_title(first.method, first.df)} of {first.test!r}, "
            f"alpha = {first.alpha:g}, nsim = {first.nsim}, seed {first.seed}"
        )
        body = self.table.to_string(index=False, float_format=lambda x: f"{x:.4f}")
        return head + "\n" + body

    def __repr__(self) -> str:
        return f"<PowerGrid over {self.along[0]!r} and {self.along[1]!r}>\n" + self.table.to_string(
            index=False
        )

    def _repr_html_(self) -> str:  # notebooks: the title line, then the table
        return _html.power_curve(self)


# --------------------------------------------------------------------------- test names
def tested_columns(spec, test: str) -> list[int]:
    """Indices into ``spec.fe_names`` of the coefficient or term named ``test``.

    The names are those of :func:`mixboot.compare.reduced_model`: a coefficient as
    ``fe_params`` names it (``"treatmentb"``) or as formulaic names the column
    (``"treatment[T.b]"``), else a fixed term (``"treatment"``, ``"cond:x"`` in
    either order) standing for all of its columns.
    """
    if not isinstance(test, str) or not test.strip():
        raise TypeError(f"test must be a coefficient or term name (a non-empty str), got {test!r}")
    return [int(j) for j in columns_to_drop(spec, test.strip())[0]]


# --------------------------------------------------------------------------- refits
@dataclass
class _Fits:
    """Refit estimates of a batch; NaN rows (and ``errors[i]``) where a refit raised."""

    theta: np.ndarray
    beta: np.ndarray
    sigma: np.ndarray
    objective: np.ndarray
    converged: np.ndarray
    vcov_unscaled: np.ndarray
    errors: dict


def _refit(model, start: np.ndarray, Y: np.ndarray, tol, *, vcov: bool = False) -> _Fits:
    """Refits of Y's columns from ``start`` (:func:`mixboot.compare.refit_start`'s form);
    ``vcov``: a GLMM's Wald covariances too (an LMM's come with every refit)."""
    spec = model.spec
    B, k, p = Y.shape[1], spec.n_theta, spec.p
    out = _Fits(
        theta=np.full((B, k), np.nan),
        beta=np.full((B, p), np.nan),
        sigma=np.full(B, np.nan),
        objective=np.full(B, np.nan),
        converged=np.zeros(B, dtype=bool),
        vcov_unscaled=np.full((B, p, p), np.nan),
        errors={},
    )

    def fail(i, exc):
        out.errors[i] = f"{type(exc).__name__}: {exc}"

    for idx, rb in refit_columns(
        model, Y, start=start, tol=tol, fail=fail, vcov=_glmm_vcov if vcov else None
    ):
        out.theta[idx], out.beta[idx], out.sigma[idx] = rb.theta, rb.beta, rb.sigma
        out.objective[idx], out.converged[idx] = rb.objective, rb.converged
        out.vcov_unscaled[idx] = rb.vcov_unscaled
    return out


def _glmm_vcov(model, refits) -> np.ndarray:
    """(R_X' R_X)^-1 of each GLMM refit (B, p, p): the beta block of the inverse of the
    penalized information given theta, at the weights of the refit's modes.

    lme4's ``unsc()`` and :meth:`mixboot.pirls.GlmmWorkspace.vcov_rx` (one theta), for
    a batch: every step is per replicate, so a replicate's numbers do not depend on
    its batch mates.  NaN where the refit's information is not positive definite.
    """
    ws, fam = model.workspace, model.family
    theta = np.asarray(refits.theta, dtype=float)
    eta = ws.eta(refits.u, theta, refits.beta)
    me = fam.link.mu_eta(eta)
    w = ws.prior_weights * me * me / fam.variance(fam.link.linkinv(eta))
    A11, F, A22, resp = ws._system(w, np.zeros_like(w), True)
    _, _, P = term1_blocks(ws.t1, theta[:, ws.theta_slices[0]], A11)
    S = tail_block(F, A22, P, resp)
    scale_tail(S, theta, ws.rest, ws.theta_slices[1:], ws.qr)
    m0 = S.shape[-1] - 1
    out = np.full((theta.shape[0], ws.p, ws.p), np.nan)
    for i in range(theta.shape[0]):
        try:
            LXX = np.linalg.cholesky(S[i, :m0, :m0])[ws.qr :, ws.qr :]
        except np.linalg.LinAlgError:
            continue
        inv = np.linalg.inv(LXX)
        out[i] = inv.T @ inv
    return out


def _wald_pvalues(fits: _Fits, cols: list[int]) -> np.ndarray:
    """Wald p-values: normal for one column, chi-square(k) for k columns."""
    b = fits.beta[:, cols]
    V = fits.vcov_unscaled[:, cols][:, :, cols] * (fits.sigma**2)[:, None, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        if len(cols) == 1:
            z = b[:, 0] / np.sqrt(V[:, 0, 0])
            return 2 * special.ndtr(-np.abs(z))
        ok = np.isfinite(V).all(axis=(1, 2)) & np.isfinite(b).all(axis=1)
        W = np.full(len(b), np.nan)
        if ok.any():
            sol = np.linalg.solve(V[ok], b[ok][..., None])[..., 0]
            W[ok] = (b[ok] * sol).sum(axis=1)
        return special.chdtrc(len(cols), W)


def _refit_result(model, fits: _Fits, y: np.ndarray, i: int, ddf: str) -> LMMResult:
    """The LMMResult of refit ``i`` for response ``y``, as ``mb.fit`` would give it."""
    optsum = replace(
        OptSummary(),
        optimizer="refit",
        theta=fits.theta[i],
        fmin=float(fits.objective[i]),
        returncode="FTOL_REACHED",
    )
    return build_result(model, fits.theta[i], optsum, y=y, ddf=ddf)


def _ddf_pvalue(result: LMMResult, cols: list[int], method: str) -> float:
    """lmerTest's p-value for the tested columns of one refit: t (one column) or F.

    One column: ``coef_table(ddf)``'s ``Pr(>|t|)``.  k columns: the F test of
    ``L beta = 0``, L the k rows of the identity; Satterthwaite as ``anova`` computes
    it (:func:`mixboot.inference.contrast_test`), Kenward-Roger with the adjusted
    covariance and pbkrtest's df, F unscaled as lmerTest's.
    """
    beta = np.asarray(result.beta, dtype=float)
    L = np.eye(beta.size)[cols]
    if method == "satterthwaite":
        sat = result._satterthwaite
        if len(cols) == 1:
            t = beta[cols[0]] / np.sqrt(sat.vcov[cols[0], cols[0]])
            return float(2.0 * stats.t.sf(abs(t), sat.df_contrast(L[0])))
        return contrast_test(sat, L, beta)["p"]
    kr = result._kenward_roger
    df = kr.df_contrast(L)
    if len(cols) == 1:
        t = beta[cols[0]] / np.sqrt(kr.vcov_adj[cols[0], cols[0]])
        return float(2.0 * stats.t.sf(abs(t), df))
    b = L @ beta
    F = float(b @ np.linalg.solve(L @ kr.vcov_adj @ L.T, b)) / len(cols)
    return float(stats.f.sf(F, len(cols), df))


def _lrt(full: _Fits, reduced: _Fits) -> np.ndarray:
    """Deviance difference; tiny negative values (optimizer noise) are set to 0."""
    return np.maximum(reduced.objective - full.objective, 0.0)


# --------------------------------------------------------------------------- replicates
@dataclass(frozen=True, eq=False)
class _Context:
    """Everything a worker needs to run power replicates; sent once per run.

    ``beta``, ``sigma`` (1 for a GLMM), ``theta``: the assumed parameters, simulated
    under (from ``full``'s specification); ``full`` and ``reduced`` (None for the
    Wald and t tests): the models refitted, from ``start_full`` and ``start_reduced``
    (theta; a GLMM's (theta, beta) without the tested columns for the reduced model).
    """

    beta: np.ndarray
    sigma: float
    theta: np.ndarray
    full: object
    reduced: object
    start_full: np.ndarray
    start_reduced: np.ndarray | None
    cols: list
    method: str
    tol: float | None
    pb_B: int


def _power_chunk(ctx: _Context, reps: np.ndarray, children) -> dict:
    """p-values, convergence, singularity and failures of replicates ``reps``."""
    n = len(reps)
    out = {
        "p": np.full(n, np.nan),
        "converged": np.zeros(n, dtype=bool),
        "singular": np.zeros(n, dtype=bool),
        "failures": [],
    }
    try:
        Y = simulate_responses(ctx.full, children, beta=ctx.beta, sigma=ctx.sigma, theta=ctx.theta)
    except Exception as exc:  # noqa: BLE001 - recorded per replicate
        out["failures"] = [(int(r), "simulate", f"{type(exc).__name__}: {exc}") for r in reps]
        return out
    full = _refit(ctx.full, ctx.start_full, Y, ctx.tol, vcov=ctx.method == "wald")
    errors = {i: ("refit", m) for i, m in full.errors.items()}
    if ctx.method == "wald":
        p = _wald_pvalues(full, ctx.cols)
        converged = full.converged
    elif ctx.method in ("satterthwaite", "kr"):
        # One result per replicate: its df never depend on its batch mates.
        converged = full.converged
        p = np.full(n, np.nan)
        ddf = "kenward-roger" if ctx.method == "kr" else "satterthwaite"
        for i in map(int, np.flatnonzero(converged & np.isfinite(full.objective))):
            if i in errors:
                continue
            try:
                with np.errstate(divide="ignore", invalid="ignore"):
                    p[i] = _ddf_pvalue(
                        _refit_result(ctx.full, full, Y[:, i], i, ddf), ctx.cols, ctx.method
                    )
            except Exception as exc:  # noqa: BLE001 - recorded per replicate
                errors[i] = ("statistic", f"{type(exc).__name__}: {exc}")
    else:
        reduced = _refit(ctx.reduced, ctx.start_reduced, Y, ctx.tol)
        for i, m in reduced.errors.items():
            errors.setdefault(i, ("refit reduced", m))
        stat = _lrt(full, reduced)
        converged = full.converged & reduced.converged
        if ctx.method == "lrt":
            p = special.chdtrc(len(ctx.cols), stat)
        else:
            p = np.full(n, np.nan)
            for i in np.flatnonzero(converged & np.isfinite(stat)):
                try:
                    p[i] = _pb_pvalue(ctx, children[i], stat[i], full, reduced, i)
                except Exception as exc:  # noqa: BLE001 - recorded per replicate
                    errors[i] = ("bootstrap", f"{type(exc).__name__}: {exc}")
    lower = ctx.full.spec.lower_bounds == 0
    singular = np.any(full.theta[:, lower] < SINGULAR_TOL, axis=1)
    for i in range(n):
        if i in errors:
            out["failures"].append((int(reps[i]), *errors[i]))
        elif converged[i] and not np.isfinite(p[i]):
            out["failures"].append((int(reps[i]), "statistic", "the test statistic is not finite"))
        else:
            out["p"][i], out["converged"][i], out["singular"][i] = p[i], converged[i], singular[i]
    return out


def _pb_pvalue(
    ctx: _Context,
    stream: np.random.SeedSequence,
    observed: float,
    full: _Fits,
    reduced: _Fits,
    i: int,
) -> float:
    """Bootstrap p-value of one simulated data set, from the reduced model fitted to it.

    Its pb_B responses draw from the children of the replicate's own stream;
    the refits start from the fits to the data set.
    """
    kids = child_streams(stream.entropy, stream.spawn_key, range(ctx.pb_B))
    Ystar = simulate_responses(
        ctx.reduced, kids, beta=reduced.beta[i], sigma=reduced.sigma[i], theta=reduced.theta[i]
    )
    start_full, start_reduced = _start(ctx.full, full, i), _start(ctx.reduced, reduced, i)
    chunk = runner.chunk_size(ctx.full)
    hits = valid = 0
    for s in range(0, ctx.pb_B, chunk):
        Yc = Ystar[:, s : s + chunk]
        f = _refit(ctx.full, start_full, Yc, ctx.tol)
        r = _refit(ctx.reduced, start_reduced, Yc, ctx.tol)
        star = _lrt(f, r)
        ok = f.converged & r.converged & np.isfinite(star)
        hits += int(np.sum(star[ok] >= observed - TIE_TOL))
        valid += int(ok.sum())
    if valid < ctx.pb_B / 2:
        raise RuntimeError(f"only {valid} of {ctx.pb_B} bootstrap refits converged")
    return (1 + hits) / (1 + valid)


def _start(model, fits: _Fits, i: int) -> np.ndarray:
    """Where refits start from fit ``i``: its theta, and its beta for a GLMM."""
    return np.concatenate([fits.theta[i], fits.beta[i]]) if is_glmm(model) else fits.theta[i]


# --------------------------------------------------------------------------- public API
def _check_int(value, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_options(
    model_or_fit,
    nsim,
    alpha,
    n_jobs,
    show_progress,
    method,
    pb_B,
    tol,
    client=None,
    checkpoint=None,
):
    if not isinstance(model_or_fit, (LMMResult, GLMMResult)):
        raise TypeError(
            "model_or_fit must be a fit (mb.fit) or a model from parameters "
            f"(mb.model), got {type(model_or_fit).__name__}"
        )
    if (
        isinstance(alpha, bool)
        or not isinstance(alpha, (int, float, np.floating))
        or not 0 < alpha < 1
    ):
        raise ValueError(f"alpha must be a number between 0 and 1, got {alpha!r}")
    if method is not None and method not in METHODS:
        raise ValueError(
            f"method must be one of {list(METHODS)} (None: the fit's ddf), got {method!r}"
        )
    _check_int(pb_B, "pb_B", 1)
    runner.check_run_options(
        B=nsim,
        B_name="nsim",
        n_jobs=n_jobs,
        tol=tol,
        show_progress=show_progress,
        client=client,
        checkpoint=checkpoint,
    )


def _resolve_method(result, method) -> str:
    """``method``, or the power method of the fit's ddf ("wald" for a GLMM); checks
    that it can run."""
    if is_glmm(result):
        if method in ("satterthwaite", "kr"):
            raise ValueError(
                f"method={method!r} ({_METHOD_TITLES[method]}) is for linear mixed "
                "models; a GLMM's power uses method='wald' (z, as glmer's "
                "summary; the default), 'lrt' or 'pb'"
            )
        return "wald" if method is None else method
    if method is None:
        method = _DDF_METHODS[result.ddf]
    if method == "kr":
        if not result.REML:
            raise ValueError(
                "method='kr' (Kenward-Roger) needs a REML model (REML=True); "
                "use method='satterthwaite' for an ML model"
            )
        if result.spec.n > _EXPECTED_MAX_N:
            raise ValueError(
                f"method='kr' uses dense {result.spec.n} x {result.spec.n} "
                f"matrices (at most {_EXPECTED_MAX_N} observations); use "
                "method='satterthwaite'"
            )
    return method


def _ml_models(result: LMMResult, test: str, cols: list[int]):
    """The full model and the model without the tested columns, both by ML."""
    reduced, dropped = reduced_model(result, test)
    if dropped != len(cols):
        raise ValueError(f"the reduced model drops {dropped} column(s), the test names {len(cols)}")
    full = (
        result.model
        if is_glmm(result) or not result.REML
        else LinearMixedModel(result.spec, REML=False)
    )
    return full, reduced


def power(
    model_or_fit: LMMResult | GLMMResult,
    test: str,
    nsim: int = 1000,
    alpha: float = 0.05,
    seed: runner.Seed = None,
    *,
    n_jobs: int = 1,
    show_progress: bool = False,
    method: str | None = None,
    pb_B: int = 199,
    tol: float | None = None,
    client: Client | None = None,
    checkpoint: PathLike | None = None,
) -> PowerResult:
    """Estimate the power of a test of a fixed effect by simulation.

    Parameters
    ----------
    model_or_fit : a model from parameters (``mb.model``) or a fit (its
        estimates are the assumed parameters).
    test : a coefficient (``"x"``, ``"treatmentb"`` or ``"treatment[T.b]"``) or
        a fixed term (``"treatment"``: all its columns, a joint test).
    nsim : number of simulated data sets.
    alpha : significance level; a replicate is significant when p < alpha.
    seed : int, numpy Generator or None; replicate i uses child i of SeedSequence(seed).
    n_jobs : local worker processes; -1 for all cores.  Results do not depend on it.
    show_progress : a tqdm progress bar.
    method : ``"satterthwaite"`` or ``"kr"`` (t, or F for a term, with
        Satterthwaite's or Kenward-Roger's denominator df as lmerTest computes them
        on each refit; ``"kr"`` for REML models only), ``"wald"`` (z or
        chi-square; these three refit by the model's criterion), ``"lrt"`` or
        ``"pb"`` (both refit by ML); see the module docstring.  Default: the
        model's or fit's ``ddf`` ("satterthwaite" unless chosen otherwise;
        "kenward-roger" maps to ``"kr"``), so power matches the p-values its
        summary shows.
    pb_B : bootstrap responses per simulated data set for ``method="pb"``.
    tol : relative objective tolerance of the refits (default 1e-12).
    client : a ``dask.distributed.Client``: run on its cluster.
    checkpoint : a directory that keeps finished replicates (resume, extend);
        ``alpha`` may change between runs on one checkpoint.

    Returns
    -------
    PowerResult

    >>> import mixboot as mb
    >>> d = mb.design.nested(groups=30, per_group=4, x={"x": [0, 1, 2, 3]})
    >>> m = mb.model("y ~ x + (1 | group)", d, beta=[0.0, 0.3], sigma=1.0, re={"group": 0.5})
    >>> res = mb.power(m, "x", nsim=100, seed=2)
    >>> res.n_valid + res.n_failed + res.n_nonconverged == 100
    True
    """
    _check_options(
        model_or_fit, nsim, alpha, n_jobs, show_progress, method, pb_B, tol, client, checkpoint
    )
    result = model_or_fit
    method = _resolve_method(result, method)
    cols = tested_columns(result.spec, test)
    nsim = int(nsim)
    if method in _OWN_CRITERION:
        full, reduced = result.model, None
    else:
        full, reduced = _ml_models(result, test, cols)
    glmm = is_glmm(result)
    theta = np.asarray(result.theta, dtype=float)
    beta = np.asarray(result.beta, dtype=float)
    sigma = 1.0 if glmm else float(result.sigma)
    start = np.concatenate([theta, beta]) if glmm else theta
    keep = np.setdiff1d(np.arange(beta.size), cols)
    start_reduced = (
        None if reduced is None else (np.concatenate([theta, beta[keep]]) if glmm else theta)
    )
    ctx = _Context(
        beta=beta,
        sigma=sigma,
        theta=theta,
        full=full,
        reduced=reduced,
        start_full=start,
        start_reduced=start_reduced,
        cols=cols,
        method=method,
        tol=tol,
        pb_B=int(pb_B),
    )
    chunk = runner.chunk_size(full)
    if method == "pb":
        chunk = min(chunk, _PB_CHUNK)
    identity = {
        "workflow": "power",
        "model": result.spec.fingerprint,
        "REML": False if glmm else result.REML,
        "test": test,
        "columns": cols,
        "method": method,
        "tol": tol,
        "pb_B": int(pb_B) if method == "pb" else None,
        "parameters": [float(v).hex() for v in np.concatenate([beta, [sigma], theta])],
        "version": __version__,
    }
    if glmm:
        identity.update(family=_family_text(result), nAGQ=result.nAGQ)
    job = runner.Job(
        task=_power_chunk, payload=ctx, B=nsim, chunk=chunk, desc="power", identity=identity
    )
    outcome = runner.run(
        job, seed, n_jobs=n_jobs, client=client, checkpoint=checkpoint, show_progress=show_progress
    )
    return _assemble(result, test, cols, method, float(alpha), nsim, outcome, int(pb_B))


def _family_text(result) -> str | None:
    """ "binomial(logit)" for a GLMM, None for an LMM."""
    return f"{result.family.name}({result.family.link.name})" if is_glmm(result) else None


def _assemble(result, test, cols, method, alpha, nsim, outcome, pb_B) -> PowerResult:
    v = outcome.values
    pvalues, converged, singular = v["p"], v["converged"], v["singular"]
    failures = outcome.failures
    failed = np.zeros(nsim, dtype=bool)
    failed[failures["replicate"].to_numpy(dtype=int)] = True
    valid = converged & ~failed
    pvalues = np.where(valid, pvalues, np.nan)
    n_valid = int(valid.sum())
    n_sig = int(np.sum(pvalues[valid] < alpha))
    lower, upper = clopper_pearson(n_sig, n_valid)
    n_failed, n_nc = int(failed.sum()), int((~converged & ~failed).sum())
    if n_failed:
        warnings.warn(
            f"{n_failed} of {nsim} power replicates failed and are excluded; see .failures",
            RuntimeWarning,
            stacklevel=3,
        )
    if n_nc:
        warnings.warn(
            f"{n_nc} of {nsim} power refits did not converge and are excluded",
            RuntimeWarning,
            stacklevel=3,
        )
    converged, singular = converged & ~failed, singular & valid
    for a in (pvalues, converged, singular):
        a.setflags(write=False)
    fe = list(result.spec.fe_names)
    return PowerResult(
        power=n_sig / n_valid if n_valid else np.nan,
        lower=lower,
        upper=upper,
        n_valid=n_valid,
        n_significant=n_sig,
        n_failed=n_failed,
        n_nonconverged=n_nc,
        n_singular=int(singular.sum()),
        test=test,
        columns=tuple(fe[j] for j in cols),
        df=len(cols),
        method=method,
        alpha=alpha,
        nsim=nsim,
        seed=int(outcome.seed.entropy),
        beta=dict(zip(fe, np.asarray(result.beta, dtype=float).tolist())),
        sigma=np.nan if is_glmm(result) else float(result.sigma),
        theta=np.asarray(result.theta),
        varcorr=result.varcorr,
        formula=result.formula,
        nobs=result.nobs,
        ngroups=dict(result.ngroups),
        REML=False if is_glmm(result) else result.REML,
        pb_B=pb_B if method == "pb" else None,
        pvalues=pvalues,
        converged=converged,
        singular=singular,
        failures=failures,
        family=_family_text(result),
    )


def _default_along(result) -> str:
    labels = list(result.ngroups)
    if len(labels) != 1 or ":" in labels[0]:
        raise ValueError(
            f"along is needed: name the grouping column to resize (the model's "
            f"grouping factors: {labels})"
        )
    return labels[0]


def _check_sizes(sizes) -> list[int]:
    if isinstance(sizes, (str, bytes)) or not hasattr(sizes, "__iter__"):
        raise TypeError(f"sizes must be a list of positive integers, got {sizes!r}")
    sizes = list(sizes)
    if not sizes:
        raise ValueError("sizes must name at least one size")
    for s in sizes:
        _check_int(s, "each of sizes", 2)
    if len(set(int(s) for s in sizes)) != len(sizes):
        raise ValueError(f"sizes has duplicates: {sizes}")
    return [int(s) for s in sizes]


def model_at_size(result, along: str, size: int):
    """The model with ``along`` resized to ``size`` levels, under the same parameters.

    A GLMM keeps its family, link, nAGQ and per-row trials (a binomial model's
    ``trials`` or cbind counts travel with the rows; a model from parameters keeps
    them in :data:`mixboot.parameters.TRIALS_COLUMN`).
    """
    spec = result.spec
    data = extend(spec.data, along=along, size=size)
    if is_glmm(result):
        return _glmm_at_size(result, data)
    return model(
        spec.formula,
        data,
        beta=dict(zip(spec.fe_names, result.beta)),
        sigma=result.sigma,
        theta=result.theta,
        REML=result.REML,
        contrasts=spec.contrasts or None,
    )


def _glmm_at_size(result, data):
    spec, fam = result.spec, result.family
    if spec.offset is not None and spec.offset_of(spec.data) is None:
        raise ValueError(
            "power_curve cannot resize a GLMM whose offset was given as offset=: "
            "write it as offset(column) in the formula"
        )
    trials = TRIALS_COLUMN if TRIALS_COLUMN in data.columns else None
    if trials is None and not spec.response.startswith("cbind(") and np.any(spec.trials != 1):
        raise ValueError(
            "power_curve can resize a binomial GLMM whose trials come from a "
            "cbind(successes, failures) response or from mb.model(trials=...)"
        )
    return model(
        spec.formula,
        data,
        beta=dict(zip(spec.fe_names, result.beta)),
        theta=result.theta,
        family=fam,
        trials=trials,
        nAGQ=result.nAGQ,
        contrasts=spec.contrasts or None,
    )


def power_curve(
    model_or_fit: LMMResult | GLMMResult,
    test: str,
    *,
    sizes: Sequence[int],
    along: str | None = None,
    nsim: int = 1000,
    alpha: float = 0.05,
    seed: runner.Seed = None,
    n_jobs: int = 1,
    show_progress: bool = False,
    method: str | None = None,
    pb_B: int = 199,
    tol: float | None = None,
    client: Client | None = None,
    checkpoint: PathLike | None = None,
) -> PowerCurve:
    """Power at several numbers of levels of a grouping factor (e.g. subjects).

    For each size the design is resized with :func:`mixboot.design.extend` (new
    levels copy existing ones, so between-level factors stay balanced; a smaller
    size keeps the first levels) and :func:`power` runs on a model with the same
    formula and parameters.  Every size uses the same ``seed``, so each point
    equals ``power(model_at_size(...), seed=seed)``.

    ``along`` defaults to the model's grouping factor when it has just one.
    ``checkpoint``: a directory holding one checkpoint per size (``size-<n>``)
    and the curve's seed, so that ``seed=None`` resumes too.

    >>> import mixboot as mb
    >>> d = mb.design.nested(groups=20, per_group=5, between={"treatment": [0.0, 1.0]},
    ...                      group="subject")
    >>> m = mb.model("y ~ treatment + (1 | subject)", d,
    ...              beta={"(Intercept)": 1.0, "treatment": 0.5}, sigma=1.0, re={"subject": 1.0})
    >>> curve = mb.power_curve(m, "treatment", sizes=[20, 40], nsim=100, seed=1)
    >>> list(curve["size"])
    [20, 40]
    """
    _check_options(
        model_or_fit, nsim, alpha, n_jobs, show_progress, method, pb_B, tol, client, checkpoint
    )
    method = _resolve_method(model_or_fit, method)
    sizes = _check_sizes(sizes)
    along = _default_along(model_or_fit) if along is None else along
    tested_columns(model_or_fit.spec, test)
    if checkpoint is not None:
        seed = _curve_seed(os.fspath(checkpoint), seed)
    elif seed is None:
        seed = int(np.random.SeedSequence().entropy)
    results = []
    for size in sizes:
        m = model_at_size(model_or_fit, along, size)
        where = None if checkpoint is None else os.path.join(os.fspath(checkpoint), f"size-{size}")
        results.append(
            power(
                m,
                test,
                nsim=nsim,
                alpha=alpha,
                seed=seed,
                n_jobs=n_jobs,
                show_progress=show_progress,
                method=method,
                pb_B=pb_B,
                tol=tol,
                client=client,
                checkpoint=where,
            )
        )
    table = pd.DataFrame(
        {
            "size": sizes,
            "power": [r.power for r in results],
            "lower": [r.lower for r in results],
            "upper": [r.upper for r in results],
            "n_valid": [r.n_valid for r in results],
            "n_failed": [r.n_failed for r in results],
            "n_nonconverged": [r.n_nonconverged for r in results],
            "n_singular": [r.n_singular for r in results],
        }
    )
    return PowerCurve.build(along, table, results)


def power_grid(
    model_or_fit: LMMResult | GLMMResult,
    test: str,
    *,
    sizes: Mapping[str, Sequence[int]],
    nsim: int = 1000,
    alpha: float = 0.05,
    seed: runner.Seed = None,
    n_jobs: int = 1,
    show_progress: bool = False,
    method: str | None = None,
    pb_B: int = 199,
    tol: float | None = None,
    client: Client | None = None,
    checkpoint: PathLike | None = None,
) -> PowerGrid:
    """Power at every combination of sizes of two grouping factors (e.g. subjects x items).

    The design is resized along the first factor of ``sizes`` with
    :func:`model_at_size`, then :func:`power_curve` runs along the second, so
    every cell equals ``power`` on the twice-resized model with the same ``seed``.

    Parameters
    ----------
    model_or_fit : a model from parameters (``mb.model``) or a fit.
    test : the coefficient or term tested, as for :func:`power`.
    sizes : dict of two entries, ``{factor: [sizes], other_factor: [sizes]}``.
    nsim, alpha, seed, n_jobs, show_progress, method, pb_B, tol, client
        As for :func:`power`.
    checkpoint : a directory holding one :func:`power_curve` checkpoint per size
        of the first factor (``<factor>-<n>``) and the grid's seed.

    Returns
    -------
    PowerGrid

    Examples
    --------
    >>> import mixboot as mb
    >>> d = mb.design.crossed(subjects=10, items=6, within={"cond": ["a", "b"]})
    >>> m = mb.model("y ~ cond + (1 | subject) + (1 | item)", d, beta=[0.0, 0.4],
    ...              sigma=1.0, re={"subject": 0.5, "item": 0.3})
    >>> grid = mb.power_grid(m, "cond", sizes={"subject": [10, 20], "item": [6, 12]},
    ...                      nsim=20, seed=1, method="wald")
    >>> grid.table[["size1", "size2"]].values.tolist()
    [[10, 6], [10, 12], [20, 6], [20, 12]]
    """
    _check_options(
        model_or_fit, nsim, alpha, n_jobs, show_progress, method, pb_B, tol, client, checkpoint
    )
    if not isinstance(sizes, dict) or len(sizes) != 2:
        raise TypeError(
            "sizes must be a dict of two grouping factors, each with a list of "
            f"sizes, e.g. {{'subject': [20, 40], 'item': [10, 20]}}; got {sizes!r}"
        )
    (first, sizes1), (second, sizes2) = sizes.items()
    if first == second:
        raise ValueError(f"sizes names {first!r} twice")
    sizes1, sizes2 = _check_sizes(sizes1), _check_sizes(sizes2)
    method = _resolve_method(model_or_fit, method)
    tested_columns(model_or_fit.spec, test)
    if checkpoint is not None:
        seed = _curve_seed(os.fspath(checkpoint), seed)
    elif seed is None:
        seed = int(np.random.SeedSequence().entropy)
    rows, results = [], []
    for size1 in sizes1:
        m = model_at_size(model_or_fit, first, size1)
        where = (
            None if checkpoint is None else os.path.join(os.fspath(checkpoint), f"{first}-{size1}")
        )
        curve = power_curve(
            m,
            test,
            sizes=sizes2,
            along=second,
            nsim=nsim,
            alpha=alpha,
            seed=seed,
            n_jobs=n_jobs,
            show_progress=show_progress,
            method=method,
            pb_B=pb_B,
            tol=tol,
            client=client,
            checkpoint=where,
        )
        rows.append(curve.table.assign(size1=size1).rename(columns={"size": "size2"}))
        results.extend(curve.results)
    table = pd.concat(rows, ignore_index=True)[
        ["size1", "size2", "power", "lower", "upper", "n_valid"]
    ]
    return PowerGrid(along=(first, second), table=table, results=tuple(results))


def _curve_seed(directory: str, seed):
    """The seed of a checkpointed power curve: kept in ``curve.json`` so seed=None resumes."""
    import json

    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, "curve.json")
    if os.path.exists(path):
        with open(path) as fh:
            saved = int(json.load(fh)["seed"])
        if seed is None:
            return saved
    if seed is None:
        seed = int(np.random.SeedSequence().entropy)
    if not os.path.exists(path) and isinstance(seed, (int, np.integer)):
        with open(path, "w") as fh:
            json.dump({"seed": int(seed)}, fh)
    return seed
