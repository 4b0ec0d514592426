"""A linear mixed model: frozen specification + numeric workspace; ``fit()``.

>>> import mixboot as mb
>>> df = mb.datasets.load("reaction")
>>> result = mb.fit("Reaction ~ 1 + Days + (1 + Days | Subject)", data=df, REML=False)
>>> round(result.objective, 4)
1757.3544
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from .glmm import fit_glmm
from .inference import check_ddf
from .optimize import OptSummary, fit_theta
from .result import SINGULAR_MESSAGE, SingularFitWarning, build_result
from .spec import ModelSpec, build_spec, check_theta_start, groups_formula
from .threads import blas_threads_for
from .workspace import Workspace

if TYPE_CHECKING:
    import pandas as pd

    from ._typing import ArrayLike, Column
    from .family import Family
    from .glmm_result import GLMMResult
    from .result import LMMResult

__all__ = ["LinearMixedModel", "fit"]


class LinearMixedModel:
    """Specification and workspace of one model; holds no estimates.

    The workspace's cross-products depend on X and Z only (plus the model's own
    y); refits for new responses reuse them (see :mod:`mixboot.refit`).

    Examples
    --------
    ``mb.fit`` builds one and fits it; the fit keeps it as ``result.model``:

    >>> import mixboot as mb
    >>> r = mb.fit("Reaction ~ Days + (Days | Subject)", data=mb.datasets.load("reaction"))
    >>> isinstance(r.model, mb.LinearMixedModel), r.model.REML
    (True, True)
    >>> bool(abs(r.model.fit().objective - r.objective) < 1e-6)
    True
    """

    def __init__(self, spec: ModelSpec, *, REML: bool):
        self.spec = spec
        self.REML = bool(REML)
        self.workspace = Workspace(spec, REML=self.REML)

    def fit(
        self,
        *,
        start: ArrayLike | None = None,
        optimizer: dict | None = None,
        warn: bool = True,
        ddf: str = "satterthwaite",
    ) -> LMMResult:
        """Optimize theta for the model's own response and return an LMMResult.

        ``ddf`` ("satterthwaite", "kenward-roger" (REML only) or "wald") is the
        reference distribution of the result's t values, p-values, intervals and summary.
        """
        ddf = check_ddf(ddf)
        if ddf == "kenward-roger" and not self.REML:
            raise ValueError(
                "ddf='kenward-roger' needs a REML fit: use REML=True, or "
                "ddf='satterthwaite' for an ML fit"
            )
        spec = self.spec
        theta0 = spec.theta_start if start is None else check_theta_start(start, spec)
        settings = OptSummary().with_overrides(**(optimizer or {}))
        ws = self.workspace
        with blas_threads_for(ws):
            opt = fit_theta(
                lambda th: ws.factorize(th).objective,
                theta0,
                spec.lower_bounds,
                settings,
                canonical=spec.canonical_theta,
                newton=ws.dense,
                warn=warn,
            )
            result = build_result(self, opt.theta, opt, ddf=ddf)
        if warn and result.is_singular:
            warnings.warn(SINGULAR_MESSAGE, SingularFitWarning, stacklevel=3)
        return result

    def __repr__(self) -> str:
        return f"LinearMixedModel({self.spec.formula!r}, REML={self.REML})"


def fit(
    formula: str,
    data: pd.DataFrame,
    *,
    REML: bool = True,
    groups: str | Sequence[str] | None = None,
    contrasts: dict | None = None,
    start: ArrayLike | None = None,
    optimizer: dict | None = None,
    ddf: str = "satterthwaite",
    family: str | Family | None = None,
    link: str | None = None,
    weights: Column | None = None,
    offset: Column | None = None,
    nAGQ: int = 1,
) -> LMMResult | GLMMResult:
    """Fit a linear mixed model from an lme4 formula by REML (default) or ML; with
    ``family``, a generalized linear mixed model as lme4's ``glmer``.

    Parameters
    ----------
    formula : lme4 syntax, e.g. ``"y ~ x + (1 + x | g) + (1 | item)"``.
    data : pandas DataFrame with the formula's columns.
    REML : fit by REML (True, as lme4) or maximum likelihood (False).
    groups : the interlace guide's shorthand: a column name adds ``(1 | name)``; a list adds
        one random intercept per name (crossed).
    contrasts : ``{"column": "sum"}`` etc. for categorical predictors
        (treatment coding by default).
    start : starting theta (lme4's order).
    optimizer : settings to override: ``optimizer`` ("auto": batched Newton with
        a BOBYQA fallback where the workspace is dense, else BOBYQA; "newton";
        "LN_BOBYQA"), ``ftol_rel``, and NLopt's ``ftol_abs``, ``xtol_abs``,
        ``initial_step``; ``xtol_zero_abs``; ``maxeval``.
    ddf : denominator degrees of freedom of the fixed-effect tests in ``pvalues``,
        ``tvalues``, ``conf_int()`` and ``summary()``: "satterthwaite" (default, t tests
        as lmerTest's), "kenward-roger" (REML fits only; adjusted standard errors and
        df as pbkrtest) or "wald" (z tests, normal reference distribution).
        ``coef_table(ddf)`` and ``anova(ddf)`` give either on any fit.
    family : None (a linear mixed model) or "binomial", "bernoulli", "poisson" (or a
        family from :mod:`mixboot.family`) for a GLMM fit by maximum likelihood
        (``REML`` and ``ddf`` do not apply; tests are Wald z as glmer's).  Binomial
        responses: 0/1, bool, a two-level factor (first level = failure),
        ``cbind(successes, failures)``, or proportions with ``weights`` = trials.
    link : the link function ("logit", "probit", "cloglog" for binomial; "log" for
        Poisson); the canonical one by default.
    weights : GLMMs: prior weights (binomial: number of trials), a column name or array.
    offset : a column name or array added to the linear predictor (as ``offset(x)``).
    nAGQ : GLMMs: 1 (Laplace, default), 0 (faster, beta estimated inside PIRLS) or
        2-25 (adaptive Gauss-Hermite quadrature; one scalar random-effect term only).

    Examples
    --------
    >>> import mixboot as mb
    >>> r = mb.fit("diameter ~ 1 + (1 | plate) + (1 | sample)", data=mb.datasets.load("crossed"))
    >>> round(r.sigma, 3)
    0.585
    """
    if family is not None and not (isinstance(family, str) and family == "gaussian"):
        return fit_glmm(
            formula,
            data,
            family=family,
            link=link,
            weights=weights,
            offset=offset,
            nAGQ=nAGQ,
            groups=groups,
            contrasts=contrasts,
            start=start,
            optimizer=optimizer,
        )
    if weights is not None:
        raise ValueError(
            "weights= are prior weights of a GLMM (give family=); a linear mixed "
            "model with case weights is not supported"
        )
    if nAGQ != 1:
        raise ValueError(
            "nAGQ applies to GLMMs (give family=); a linear mixed model's likelihood is exact"
        )
    if not isinstance(REML, (bool, np.bool_)):
        raise TypeError(f"REML must be True or False, got {REML!r}")
    ddf = check_ddf(ddf)
    if ddf == "kenward-roger" and not REML:
        raise ValueError(
            "ddf='kenward-roger' needs a REML fit: use REML=True, or "
            "ddf='satterthwaite' for an ML fit"
        )
    if groups is not None:
        formula = groups_formula(formula, groups)
    spec = build_spec(formula, data, contrasts=contrasts, offset=offset)
    return LinearMixedModel(spec, REML=REML).fit(start=start, optimizer=optimizer, ddf=ddf)
