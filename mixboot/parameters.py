"""Models from chosen parameters: ``mb.model()`` for simulation and power analysis.

A model from parameters is an :class:`~mixboot.result.LMMResult` whose
estimates were given rather than fitted: the design (X and Z) comes from the
data frame, beta, sigma and the random-effect covariances from the caller.  It
can be used wherever a fit is (``simulate``, ``bootMer``, ``power``).  The
response column need not exist in the data.

Random effects are given per grouping factor as standard deviations and an
optional correlation matrix, Sigma = diag(sd) R diag(sd), or as
lme4's theta.  lme4 parametrizes Sigma / sigma^2 = T T' with T lower triangular;
theta is T's lower triangle column by column.

>>> import mixboot as mb
>>> df = mb.design.nested(groups=3, per_group=10, x={"x": range(1, 11)})
>>> m = mb.model("y ~ 1 + x + (1 + x | group)", df, beta={"(Intercept)": 6, "x": 4}, sigma=1,
...              re={"group": {"sd": [3, 2], "corr": [[1, 0.7], [0.7, 1]]}})
>>> m.varcorr.round(3)
        grp         var1 var2  vcov  sdcor
0     group  (Intercept)  NaN   9.0    3.0
1     group            x  NaN   4.0    2.0
2     group  (Intercept)    x   4.2    0.7
3  Residual          NaN  NaN   1.0    1.0
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .family import get_family
from .formula import parse_formula
from .glmm import GeneralizedLinearMixedModel
from .glmm_result import GLMMResult
from .model import LinearMixedModel
from .optimize import OptSummary
from .result import LMMResult
from .runner import seed_streams
from .simulate import check_parameters, simulate_glmm_block
from .spec import build_spec, groups_formula

if TYPE_CHECKING:
    from ._typing import ArrayLike, Column, Values
    from .family import Family

__all__ = ["model", "FROM_PARAMETERS"]

FROM_PARAMETERS = "FROM_PARAMETERS"
_PSD_TOL = 1e-10


#: the data column that carries ``trials=`` given as numbers (so that resized designs keep them)
TRIALS_COLUMN = ".trials"


def model(
    formula: str,
    data: pd.DataFrame,
    *,
    beta: Values,
    sigma: float | None = None,
    re: Mapping[str, Any] | None = None,
    theta: ArrayLike | None = None,
    REML: bool = True,
    groups: str | Sequence[str] | None = None,
    contrasts: dict | None = None,
    family: str | Family | None = None,
    link: str | None = None,
    trials: float | Column | None = None,
    offset: Column | None = None,
    nAGQ: int = 1,
) -> LMMResult | GLMMResult:
    """An unfitted model with the given parameters, usable wherever a fit is.

    Parameters
    ----------
    formula : lme4 formula; its response column may be absent from ``data``.
    data : the design, e.g. from :mod:`mixboot.design`.
    beta : dict {coefficient name: value} (names as in ``fe_params``, e.g.
        ``"(Intercept)"``, ``"cond[T.b]"``) or a sequence in that order.
    sigma : residual standard deviation (> 0).
    re : dict {grouping factor: spec}; spec is a number (the SD of a single
        random effect), a list of SDs (independent effects), or
        ``{"sd": [...], "corr": [[...]]}``.  Every grouping factor of the
        formula must be given.  Effects of different terms on one factor (as
        ``||`` makes) cannot be correlated.
    theta : alternatively, lme4's theta (relative covariance factors).
    REML : criterion used when this model is refitted (bootstrap, power).
    family, link : a GLMM (``"binomial"``, ``"bernoulli"``, ``"poisson"``, as
        ``mb.fit``): ``beta`` is then on the link scale, ``re`` gives the SDs and
        correlations of the random effects on the link scale (theta is Sigma's
        factor itself: the scale is fixed at 1) and there is no ``sigma``.
        Returns a :class:`~mixboot.glmm_result.GLMMResult` whose ``from_parameters``
        is True.
    trials : binomial GLMMs: trials per observation (a number, an array or a
        column name; default 1, Bernoulli), unless the response is a
        ``cbind(successes, failures)`` whose columns are in ``data``.
    offset : GLMMs: an offset of the linear predictor (array or column name).
    nAGQ : GLMMs: the criterion used when this model is refitted (1: Laplace).

    Examples
    --------
    >>> import mixboot as mb
    >>> d = mb.design.crossed(subjects=10, items=8, within={"cond": ["a", "b"]})
    >>> g = mb.model("y ~ cond + (1 | subject) + (1 | item)", d, family="bernoulli",
    ...              beta={"(Intercept)": 0.0, "condb": 0.5},
    ...              re={"subject": 1.0, "item": 0.5})
    >>> g.from_parameters, g.family.name, g.theta.tolist()
    (True, 'binomial', [1.0, 0.5])
    """
    _check_re_theta(re, theta)
    if family is not None:
        if sigma is not None:
            raise ValueError(
                "sigma does not apply to a GLMM (its scale is fixed at 1): leave it "
                "out and give the random effects' SDs on the link scale in re="
            )
        if REML is not True:
            raise ValueError("REML does not apply to a GLMM (fitted by maximum likelihood)")
        return _glmm_model(
            formula,
            data,
            beta=beta,
            re=re,
            theta=theta,
            groups=groups,
            contrasts=contrasts,
            family=family,
            link=link,
            trials=trials,
            offset=offset,
            nAGQ=nAGQ,
        )
    for name, value in (("link", link), ("trials", trials), ("offset", offset)):
        if value is not None:
            raise ValueError(f"{name}= applies to GLMMs: give family= too")
    if sigma is None:
        raise TypeError(
            "model() needs sigma= (the residual SD) for a linear mixed model, or family= for a GLMM"
        )
    return _lmm_model(
        formula,
        data,
        beta=beta,
        sigma=sigma,
        re=re,
        theta=theta,
        REML=REML,
        groups=groups,
        contrasts=contrasts,
    )


def _check_re_theta(re, theta) -> None:
    if (re is None) == (theta is None):
        raise ValueError(
            "give the random effects either as re={...} (SDs and correlations) "
            "or as theta=[...], not both"
            if re is not None
            else "random effects are missing: give re={...} or theta=[...]"
        )


def _lmm_model(formula, data, *, beta, sigma, re, theta, REML, groups, contrasts):
    if groups is not None:
        formula = groups_formula(formula, groups)
    data = _with_response(formula, data)
    spec = build_spec(formula, data, contrasts=contrasts, fit_response=False)
    lmm = LinearMixedModel(spec, REML=REML)
    sigma = _check_sigma(sigma)
    if re is not None:
        theta = theta_from_re(spec, re, sigma)
    template = _Template(spec)
    beta, sigma, theta = check_parameters(template, beta, sigma, theta)
    _check_theta_bounds(spec, theta)
    return _result_from_parameters(lmm, beta, sigma, theta)


def _glmm_model(
    formula, data, *, beta, re, theta, groups, contrasts, family, link, trials, offset, nAGQ
):
    fam = get_family(family, link)
    if groups is not None:
        formula = groups_formula(formula, groups)
    data = _with_response(formula, data)
    if trials is not None:
        if fam.name != "binomial":
            raise ValueError(f"trials= applies to binomial GLMMs, not {fam.name}")
        if not isinstance(trials, str):
            data = data.assign(
                **{TRIALS_COLUMN: np.broadcast_to(np.asarray(trials, dtype=float), (len(data),))}
            )
            trials = TRIALS_COLUMN
    placeholder = build_spec(
        formula, data, contrasts=contrasts, family=fam, weights=trials, offset=offset
    )
    theta = theta_from_re(placeholder, re, 1.0) if re is not None else theta
    beta, _, theta = check_parameters(_Template(placeholder), beta, 1.0, theta)
    _check_theta_bounds(placeholder, theta)
    theta = placeholder.canonical_theta(theta)
    # The response column is a placeholder; the model's own response (where a fit
    # or a GLM start would read it) is one draw from the model, on a fixed stream.
    _, streams = seed_streams(0, 1)
    y = simulate_glmm_block(
        placeholder,
        fam,
        streams,
        beta=beta,
        theta=theta,
        trials=placeholder.trials,
        offset=placeholder.offset,
    )[:, 0]
    spec = replace(placeholder, y=y)
    glmm = GeneralizedLinearMixedModel(spec, fam, nAGQ=nAGQ)
    eta = glmm.workspace.eta(np.zeros((1, glmm.workspace.q)), theta[None], beta[None])[0]
    u = tuple(np.zeros((t.nlevels, t.p)) for t in spec.terms)
    vc = glmm.workspace.vcov_rx(theta, eta)
    for a in (theta, beta, vc, eta, *u):
        a.setflags(write=False)
    optsum = replace(
        OptSummary(), optimizer="none", theta_start=theta, theta=theta, returncode=FROM_PARAMETERS
    )
    return GLMMResult(
        model=glmm,
        theta=theta,
        beta=beta,
        u=u,
        eta=eta,
        objective=np.nan,
        vcov_matrix=vc,
        vcov_method="rx",
        optsum=optsum,
    )


def _check_theta_bounds(spec, theta) -> None:
    if np.any(theta[spec.lower_bounds == 0] < 0):
        raise ValueError(
            "theta has negative values on the diagonal of a relative covariance "
            f"factor ({list(spec.theta_names)})"
        )


def theta_from_re(spec, re, sigma: float) -> np.ndarray:
    """lme4's theta for random-effect SDs / correlations given per grouping factor."""
    if not isinstance(re, Mapping):
        raise TypeError(
            "re must be a dict {grouping factor: SDs or {'sd': [...], 'corr': "
            f"[[...]]}}, got {type(re).__name__}"
        )
    labels = list(dict.fromkeys(t.label for t in spec.terms))
    unknown = [g for g in re if g not in labels]
    missing = [g for g in labels if g not in re]
    if unknown or missing:
        raise ValueError(
            f"re names grouping factor(s) {unknown} not in the formula / lacks "
            f"{missing}; the formula's grouping factors: {labels}"
        )
    theta = np.empty(spec.n_theta)
    for g in labels:
        idx = [i for i, t in enumerate(spec.terms) if t.label == g]
        names = [c for i in idx for c in spec.terms[i].colnames]
        sd, corr = _sd_corr(g, re[g], names)
        cov = np.outer(sd, sd) * corr
        off = 0
        for i in idx:
            term, sl = spec.terms[i], spec.theta_slices[i]
            block = slice(off, off + term.p)
            outside = np.delete(corr[block], np.arange(off, off + term.p), axis=1)
            if np.any(outside != 0):
                raise ValueError(
                    f"re[{g!r}]: effects of separate terms on {g!r} (as '||' "
                    "writes them) cannot be correlated"
                )
            T = _psd_cholesky(cov[block, block] / sigma**2)
            theta[sl] = term.theta_from_factor(T)
            off += term.p
    return theta


def _sd_corr(g: str, value, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    p = len(names)
    if isinstance(value, Mapping):
        extra = set(value) - {"sd", "corr"}
        if extra or "sd" not in value:
            raise ValueError(
                f"re[{g!r}] takes keys 'sd' and optionally 'corr', got {sorted(value)}"
            )
        sd, corr = value["sd"], value.get("corr")
    else:
        sd, corr = value, None
    sd = np.atleast_1d(np.asarray(sd, dtype=float))
    if sd.ndim != 1 or sd.size != p:
        raise ValueError(
            f"re[{g!r}]['sd'] must have {p} value(s), one per effect {names}, got {sd.size}"
        )
    if not np.all(np.isfinite(sd)) or np.any(sd < 0):
        raise ValueError(f"re[{g!r}]['sd'] must be finite and >= 0, got {sd.tolist()}")
    if corr is None:
        return sd, np.eye(p)
    corr = np.asarray(corr, dtype=float)
    if p == 1 and corr.size == 1:
        corr = corr.reshape(1, 1)
    if corr.shape != (p, p):
        raise ValueError(
            f"re[{g!r}]['corr'] must be a {p}x{p} matrix for effects {names}, "
            f"got shape {corr.shape}"
        )
    if not np.allclose(corr, corr.T, atol=1e-12, rtol=0):
        raise ValueError(f"re[{g!r}]['corr'] must be symmetric")
    if not np.allclose(np.diag(corr), 1.0, atol=1e-12, rtol=0):
        raise ValueError(f"re[{g!r}]['corr'] must have a unit diagonal")
    if np.any(np.abs(corr) > 1 + 1e-12) or np.linalg.eigvalsh(corr).min() < -1e-10:
        raise ValueError(f"re[{g!r}]['corr'] must be positive semidefinite (a correlation matrix)")
    return sd, corr


def _psd_cholesky(A: np.ndarray) -> np.ndarray:
    """Lower-triangular T with T T' = A for positive semidefinite A (zero pivots allowed)."""
    p = A.shape[0]
    T = np.zeros_like(A)
    scale = max(float(np.max(np.abs(np.diag(A)))), 1.0)
    for j in range(p):
        d = A[j, j] - T[j, :j] @ T[j, :j]
        if d <= _PSD_TOL * scale:
            continue  # a degenerate direction: this column of T stays zero
        T[j, j] = np.sqrt(d)
        T[j + 1 :, j] = (A[j + 1 :, j] - T[j + 1 :, :j] @ T[j, :j]) / T[j, j]
    return T


def _check_sigma(sigma) -> float:
    try:
        s = float(sigma)
    except (TypeError, ValueError):
        raise TypeError(f"sigma must be a number, got {sigma!r}") from None
    if not np.isfinite(s) or s <= 0:
        raise ValueError(f"sigma must be a positive number, got {sigma!r}")
    return s


def _with_response(formula: str, data):
    """Data with a placeholder response column when the formula's response is absent."""
    if not isinstance(data, pd.DataFrame):
        data = pd.DataFrame(data)
    response = parse_formula(formula).response
    if response in data.columns:
        return data
    if not response.isidentifier():
        raise ValueError(
            f"the response {response!r} is not a column of data; for a model from "
            "parameters name it with a plain column name"
        )
    return data.assign(**{response: 0.0})


class _Template:
    """Just enough of a result for :func:`check_parameters` to validate against."""

    def __init__(self, spec):
        self.spec = spec
        self.beta = np.full(spec.p, np.nan)
        self.sigma = np.nan
        self.theta = np.full(spec.n_theta, np.nan)


def _result_from_parameters(lmm, beta, sigma, theta):
    """An LMMResult carrying the given parameters; its response is the mean X beta."""
    spec, ws = lmm.spec, lmm.workspace
    theta = spec.canonical_theta(theta)
    y = spec.X @ beta
    # vcov(beta) does not depend on the response, but y = X beta lies in X's column
    # space, where the Cholesky factor of [Z X y] loses its last pivot (or gets a
    # slightly negative one) and fails: factorize with a response X cannot fit.
    probe = y + np.random.default_rng(0).standard_normal(y.shape[0])
    fac = ws.factorize(theta[None, :], ws.responses(probe[:, None]))
    vc = ws.vcov_unscaled(fac)
    u = tuple(np.zeros((t.nlevels, t.p)) for t in spec.terms)
    for a in (y, theta, beta, vc, *u):
        a.setflags(write=False)
    optsum = replace(
        OptSummary(), optimizer="none", theta_start=theta, theta=theta, returncode=FROM_PARAMETERS
    )
    return LMMResult(
        model=lmm,
        y=y,
        theta=theta,
        beta=beta,
        sigma=float(sigma),
        objective=np.nan,
        logdet_z=np.nan,
        pwrss=np.nan,
        u=u,
        vcov_unscaled=vc,
        optsum=optsum,
    )
