"""The immutable result of a fit, built whole in one place by :func:`build_result`."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from scipy import special, stats

from . import _html
from .inference import KenwardRoger, Satterthwaite, anova_table, check_ddf, coef_table
from .optimize import OptSummary
from .profile import profile_intervals
from .simulate import simulate
from .summary import summary_text

if TYPE_CHECKING:
    from .spec import ModelSpec

__all__ = ["FitView", "LMMResult", "SingularFitWarning", "build_result"]

SINGULAR_TOL = 1e-4
SINGULAR_MESSAGE = (
    "boundary (singular) fit: a random-effect variance is zero or a correlation "
    "is +-1; see result.varcorr (lme4: help('isSingular'))"
)


class SingularFitWarning(UserWarning):
    """The fit is on the boundary: a variance is zero or a correlation is +-1 (lme4's
    "boundary (singular) fit").  The model is then overparametrized for these data.

    Examples
    --------
    >>> import warnings
    >>> import mixboot as mb
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("error", mb.SingularFitWarning)
    ...     r = mb.fit("Reaction ~ Days + (Days | Subject)", data=mb.datasets.load("reaction"))
    >>> r.is_singular
    False
    """


class FitView:
    """What linear and generalized linear mixed-model results share: the model's
    identity, lme4's singularity test and the random effects (``self.model``,
    ``self.theta`` and ``self.u`` are the result's)."""

    @property
    def spec(self) -> ModelSpec:
        return self.model.spec  # type: ignore[attr-defined]

    @property
    def formula(self) -> str:
        return self.spec.formula

    @property
    def nobs(self) -> int:
        return self.spec.n

    @property
    def ngroups(self) -> dict[str, int]:
        return self.spec.ngroups

    @property
    def from_parameters(self) -> bool:
        """True for a model built from chosen parameters by ``mb.model`` (not fitted)."""
        return self.optsum.returncode == "FROM_PARAMETERS"  # type: ignore[attr-defined]

    @property
    def converged(self) -> bool:
        """The optimizer met its criteria (True for a model from parameters: nothing to fit)."""
        return self.optsum.converged or self.from_parameters  # type: ignore[attr-defined]

    @cached_property
    def fe_params(self) -> pd.Series:
        return pd.Series(
            self.beta,  # type: ignore[attr-defined]
            index=list(self.spec.fe_names),
            name="Estimate",
        )

    @property
    def is_singular(self) -> bool:
        """lme4's isSingular: a bounded theta element below 1e-4."""
        lower = self.spec.lower_bounds
        return bool(np.any(self.theta[lower == 0] < SINGULAR_TOL))  # type: ignore[attr-defined]

    def _factors(self) -> list[np.ndarray]:
        theta = self.theta  # type: ignore[attr-defined]
        return [t.factor(theta[s]) for t, s in zip(self.spec.terms, self.spec.theta_slices)]

    def _varcorr_rows(self, scale: float) -> list[tuple]:
        """lme4's as.data.frame(VarCorr()) rows of the random effects (no residual);
        a second term on one factor is named ``g.1`` as lme4 names it."""
        rows, seen = [], {}
        for term, T in zip(self.spec.terms, self._factors()):
            k = seen.get(term.label, 0)
            seen[term.label] = k + 1
            grp = term.label if k == 0 else f"{term.label}.{k}"
            cov = scale * T @ T.T
            sd = np.sqrt(np.diag(cov))
            for i, name in enumerate(term.colnames):
                rows.append((grp, name, None, cov[i, i], sd[i]))
            for j in range(term.p):
                for i in range(j + 1, term.p):
                    corr = cov[i, j] / (sd[i] * sd[j]) if sd[i] > 0 and sd[j] > 0 else np.nan
                    rows.append((grp, term.colnames[j], term.colnames[i], cov[i, j], corr))
        return rows

    @cached_property
    def ranef(self) -> dict[str, pd.DataFrame]:
        """Conditional modes b per grouping factor (levels x coefficients)."""
        out: dict[str, pd.DataFrame] = {}
        for term, T, u in zip(self.spec.terms, self._factors(), self.u):  # type: ignore[attr-defined]
            frame = pd.DataFrame(
                u @ T.T, index=pd.Index(term.levels, name=term.label), columns=list(term.colnames)
            )
            prev = out.get(term.label)
            if prev is None:
                out[term.label] = frame
                continue
            # Terms on one factor share its levels; a repeated column name gets the term's expr.
            clash = frame.columns.intersection(prev.columns)
            frame = frame.rename(columns={c: f"{c}_{term.expr}" for c in clash})
            out[term.label] = pd.concat([prev, frame], axis=1)
        return out


@dataclass(frozen=True, eq=False)
class LMMResult(FitView):
    """Estimates of a linear mixed model.

    ``theta`` is the relative covariance parameter in lme4's order; ``sigma``
    the residual standard deviation; ``objective`` the REML criterion for REML
    fits and the deviance for ML fits.  ``ddf`` names the reference distribution
    of ``tvalues``, ``pvalues``, ``conf_int()`` and ``summary()``: "satterthwaite"
    (default, as lmerTest: t with Satterthwaite degrees of freedom), "kenward-roger"
    (REML fits, as pbkrtest) or "wald" (normal, as MixedModels.jl);
    :meth:`coef_table` and :meth:`anova` take any of them on demand.

    Examples
    --------
    >>> import mixboot as mb
    >>> r = mb.fit("Reaction ~ Days + (Days | Subject)", data=mb.datasets.load("reaction"))
    >>> list(r.fe_params.index), r.nobs, r.ngroups
    (['(Intercept)', 'Days'], 180, {'Subject': 18})
    >>> list(r.varcorr.columns)
    ['grp', 'var1', 'var2', 'vcov', 'sdcor']
    >>> print(r.summary())  # doctest: +SKIP
    """

    model: object = field(repr=False)
    y: np.ndarray = field(repr=False)
    theta: np.ndarray
    beta: np.ndarray
    sigma: float
    objective: float
    logdet_z: float = field(repr=False)
    pwrss: float = field(repr=False)
    u: tuple = field(repr=False)
    vcov_unscaled: np.ndarray = field(repr=False)
    optsum: OptSummary = field(repr=False)
    ddf: str = field(default="satterthwaite", repr=False)

    def __post_init__(self):
        ddf = check_ddf(self.ddf)
        if ddf == "kenward-roger" and not self.model.REML:
            raise ValueError("ddf='kenward-roger' needs a REML fit (REML=True)")
        object.__setattr__(self, "ddf", ddf)

    # -- identity ---------------------------------------------------------------
    @property
    def REML(self) -> bool:
        return self.model.REML

    # -- fixed effects ------------------------------------------------------------
    @property
    def scale(self) -> float:
        return self.sigma**2

    @cached_property
    def vcov(self) -> pd.DataFrame:
        names = list(self.spec.fe_names)
        return pd.DataFrame(self.scale * self.vcov_unscaled, index=names, columns=names)

    @cached_property
    def bse(self) -> pd.Series:
        return pd.Series(
            np.sqrt(np.diag(self.vcov.to_numpy())), index=self.fe_params.index, name="Std. Error"
        )

    @cached_property
    def _satterthwaite(self) -> Satterthwaite:
        """C(varpar), its Jacobian and A = 2 H^-1 for Satterthwaite df (computed once)."""
        return Satterthwaite.from_result(self)

    @cached_property
    def _kenward_roger(self) -> KenwardRoger:
        """pbkrtest's adjusted vcov(beta) and what Kenward-Roger df need (REML fits)."""
        return KenwardRoger.from_result(self)

    def coef_table(self, ddf: str | None = None) -> pd.DataFrame:
        """lmerTest's coefficient table: Estimate, Std. Error, df, t value, Pr(>|t|).

        ``ddf``: "satterthwaite"; "kenward-roger" (REML fits: the Std. Error is
        Kenward-Roger's adjusted one, as lmerTest prints it); or "wald" (columns
        ``z value``, ``Pr(>|z|)``, df NaN).  The fit's ``ddf`` by default.
        """
        ddf = self.ddf if ddf is None else check_ddf(ddf)
        cache = self.__dict__.setdefault("_coef_tables", {})
        if ddf not in cache:
            cache[ddf] = coef_table(self, ddf)
        return cache[ddf].copy()

    def anova(self, ddf: str | None = None) -> pd.DataFrame:
        """lmerTest's type III anova table of the fixed terms (the intercept excluded).

        Columns Sum Sq, Mean Sq, NumDF, DenDF, F value, Pr(>F); ``ddf`` as
        :meth:`coef_table` ("wald": DenDF inf, p from chi-square(NumDF) of NumDF * F).
        """
        ddf = self.ddf if ddf is None else check_ddf(ddf)
        return anova_table(self, ddf)

    @property
    def df(self) -> pd.Series:
        """Denominator degrees of freedom of each coefficient's test (NaN for ddf="wald")."""
        return self.coef_table()["df"].rename("df")

    @property
    def tvalues(self) -> pd.Series:
        """Estimate / Std. Error, named "t value" ("z value" for ddf="wald"); for
        "kenward-roger" the Std. Error is the adjusted one."""
        if self.ddf == "kenward-roger":
            return self.coef_table()["t value"]
        name = "z value" if self.ddf == "wald" else "t value"
        return (self.fe_params / self.bse).rename(name)

    @property
    def pvalues(self) -> pd.Series:
        """Two-sided p-values: t with the fit's ddf (Satterthwaite), or normal for "wald"."""
        table = self.coef_table()
        return table.iloc[:, -1].rename(table.columns[-1])

    def conf_int(self, level: float = 0.95, method: str = "wald", **kwargs: Any) -> pd.DataFrame:
        """Confidence intervals, columns ``lower`` and ``upper``.

        ``method="wald"`` (default): the fixed effects, estimate +- q * se, q the t
        quantile with the fit's df (Satterthwaite, Kenward-Roger with its adjusted se)
        or the normal quantile for ddf="wald".

        ``method="profile"``: lme4's ``confint(method = "profile", oldNames = FALSE)``
        for every parameter (random-effect SDs and correlations, ``sigma``, the fixed
        effects), from the ML deviance (a REML fit is refitted by ML); see
        :func:`mixboot.profile.profile_intervals` (keyword ``which``).

        ``method="boot"``: ``mixboot.bootMer(self, **kwargs).confint(level=level)``
        (pass ``B``, ``seed``, ...), rows named as the profile's.
        """
        if not 0 < level < 1:
            raise ValueError(f"level must be between 0 and 1, got {level!r}")
        key = str(method).strip().lower() if isinstance(method, str) else method
        if key == "profile":
            return profile_intervals(self, level, **kwargs)
        if key in ("boot", "bootstrap"):
            return self.bootMer(**kwargs).confint(level=level)
        if key != "wald":
            raise ValueError(f"method must be 'wald', 'profile' or 'boot', got {method!r}")
        if kwargs:
            raise TypeError(f"unexpected keyword argument(s) {sorted(kwargs)} for method='wald'")
        se = self.bse
        if self.ddf == "wald":
            q = special.ndtri(0.5 + level / 2)
        else:
            table = self.coef_table()
            q = stats.t.ppf(0.5 + level / 2, table["df"].to_numpy())
            se = table["Std. Error"]  # Kenward-Roger's adjusted one for that ddf
        return pd.DataFrame({"lower": self.fe_params - q * se, "upper": self.fe_params + q * se})

    # -- variance components --------------------------------------------------------
    @cached_property
    def varcorr(self) -> pd.DataFrame:
        """lme4's as.data.frame(VarCorr()): grp, var1, var2, vcov, sdcor."""
        rows = self._varcorr_rows(self.scale)
        rows.append(("Residual", None, None, self.scale, self.sigma))
        return pd.DataFrame(rows, columns=["grp", "var1", "var2", "vcov", "sdcor"])

    @cached_property
    def fittedvalues(self) -> np.ndarray:
        zb = np.zeros(self.nobs)
        for term, T, u in zip(self.spec.terms, self._factors(), self.u):
            b = u @ T.T
            zb += np.einsum("ij,ij->i", term.zraw, b[term.codes])
        eta = self.spec.X @ self.beta + zb
        # an offset(...) term was taken out of y before fitting: fitted values add it back
        return eta if self.spec.offset is None else eta + self.spec.offset

    @property
    def resid(self) -> np.ndarray:
        y = self.y if self.spec.offset is None else self.y + self.spec.offset
        return y - self.fittedvalues

    # -- likelihood -------------------------------------------------------------------
    @property
    def loglik(self) -> float:
        """Log-likelihood at the optimum (the REML log-likelihood for REML fits, as lme4)."""
        return -0.5 * self.objective

    @property
    def deviance(self) -> float:
        """-2 log-likelihood (ML), at the estimates; for REML fits at the REML estimates."""
        n = self.nobs
        return float(self.logdet_z + n * np.log(2 * np.pi * self.scale) + self.pwrss / self.scale)

    @property
    def n_params(self) -> int:
        return self.spec.p + self.spec.n_theta + 1

    @property
    def aic(self) -> float:
        return -2 * self.loglik + 2 * self.n_params

    @property
    def bic(self) -> float:
        return -2 * self.loglik + self.n_params * np.log(self.nobs)

    # -- convenience ----------------------------------------------------------------
    simulate = simulate  # mixboot.simulate with this fit as ``result``

    def summary(self) -> str:
        return summary_text(self)

    def __repr__(self) -> str:
        if self.from_parameters:
            return (
                f"<LMMResult {self.formula!r} from parameters: beta "
                f"{np.round(self.beta, 4).tolist()}, sigma {self.sigma:.4g}, "
                f"theta {np.round(self.theta, 4).tolist()}, nobs {self.nobs}>"
            )
        kind = "REML" if self.REML else "ML"
        return (
            f"<LMMResult {self.formula!r} fit by {kind}: objective {self.objective:.4f}, "
            f"nobs {self.nobs}, theta {np.round(self.theta, 4).tolist()}>"
        )

    def _repr_html_(self) -> str:
        return _html.lmm(self)


def build_result(
    model,
    theta: np.ndarray,
    optsum: OptSummary,
    y: np.ndarray | None = None,
    ddf: str = "satterthwaite",
) -> LMMResult:
    """Compute every estimate at ``theta`` for response ``y`` (the model's own by default)."""
    ws = model.workspace
    theta = model.spec.canonical_theta(np.asarray(theta, dtype=float))
    if y is None:
        y, resp = model.spec.y, ws.response
    else:
        y = np.asarray(y, dtype=float)
        resp = ws.responses(y[:, None])
    fac = ws.factorize(theta[None, :], resp)
    beta, sigma = ws.fixef_sigma(fac)
    u = ws.conditional_modes(theta, fac, resp, beta[0])
    d = fac.diagonal()[0]
    logdet_z = float(
        np.log(fac.C[0].reshape(ws.l1, -1)[:, :: ws.p1 + 1]).sum()
        if ws.p1 == 1
        else np.linalg.slogdet(fac.C[0])[1].sum()
    )
    logdet_z += 2.0 * np.log(d[: ws.qr]).sum()
    arr = [np.asarray(a) for a in (theta, beta[0])]
    for a in arr + u:
        a.setflags(write=False)
    vc = ws.vcov_unscaled(fac)
    vc.setflags(write=False)
    return LMMResult(
        model=model,
        y=y,
        theta=arr[0],
        beta=arr[1],
        sigma=float(sigma[0]),
        objective=float(fac.objective[0]),
        logdet_z=logdet_z,
        pwrss=float(d[-1] ** 2),
        u=tuple(u),
        vcov_unscaled=vc,
        optsum=optsum,
        ddf=ddf,
    )
