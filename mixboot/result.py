"""The immutable result of a fit, built whole in one place by :func:`build_result`."""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd
from scipy import special

from .optimize import OptSummary
from .simulate import simulate
from .summary import summary_text

__all__ = ["LMMResult", "build_result"]

SINGULAR_TOL = 1e-4


@dataclass(frozen=True, eq=False)
class LMMResult:
    """Estimates of a linear mixed model.

    ``theta`` is the relative covariance parameter in lme4's order; ``sigma``
    the residual standard deviation; ``objective`` the REML criterion for REML
    fits and the deviance for ML fits.  Standard errors, z values and p-values
    are Wald statistics with the normal reference distribution (lme4 prints no
    p-values; MixedModels.jl prints these).
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

    # -- identity ---------------------------------------------------------------
    @property
    def spec(self):
        return self.model.spec

    @property
    def REML(self) -> bool:
        return self.model.REML

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
        return self.optsum.returncode == "FROM_PARAMETERS"

    @property
    def converged(self) -> bool:
        """The optimizer met its criteria (True for a model from parameters: nothing to fit)."""
        return self.optsum.converged or self.from_parameters

    @property
    def is_singular(self) -> bool:
        """lme4's isSingular: a bounded theta element below 1e-4."""
        lower = self.spec.lower_bounds
        return bool(np.any(self.theta[lower == 0] < SINGULAR_TOL))

    # -- fixed effects ------------------------------------------------------------
    @cached_property
    def fe_params(self) -> pd.Series:
        return pd.Series(self.beta, index=list(self.spec.fe_names), name="Estimate")

    @property
    def scale(self) -> float:
        return self.sigma ** 2

    @cached_property
    def vcov(self) -> pd.DataFrame:
        names = list(self.spec.fe_names)
        return pd.DataFrame(self.scale * self.vcov_unscaled, index=names, columns=names)

    @cached_property
    def bse(self) -> pd.Series:
        return pd.Series(np.sqrt(np.diag(self.vcov.to_numpy())), index=self.fe_params.index,
                         name="Std. Error")

    @property
    def tvalues(self) -> pd.Series:
        return (self.fe_params / self.bse).rename("z value")

    @property
    def pvalues(self) -> pd.Series:
        """Two-sided Wald z p-values (normal reference distribution)."""
        return pd.Series(2 * special.ndtr(-np.abs(self.tvalues.to_numpy())),
                         index=self.fe_params.index, name="Pr(>|z|)")

    def conf_int(self, level: float = 0.95) -> pd.DataFrame:
        """Wald intervals for the fixed effects: estimate +- z * se."""
        if not 0 < level < 1:
            raise ValueError(f"level must be between 0 and 1, got {level!r}")
        z = special.ndtri(0.5 + level / 2)
        return pd.DataFrame({"lower": self.fe_params - z * self.bse,
                             "upper": self.fe_params + z * self.bse})

    # -- variance components --------------------------------------------------------
    def _factors(self):
        return [t.factor(self.theta[s]) for t, s in zip(self.spec.terms, self.spec.theta_slices)]

    @cached_property
    def varcorr(self) -> pd.DataFrame:
        """lme4's as.data.frame(VarCorr()): grp, var1, var2, vcov, sdcor."""
        rows, seen = [], {}
        for term, T in zip(self.spec.terms, self._factors()):
            k = seen.get(term.label, 0)
            seen[term.label] = k + 1
            grp = term.label if k == 0 else f"{term.label}.{k}"
            cov = self.scale * T @ T.T
            sd = np.sqrt(np.diag(cov))
            for i, name in enumerate(term.colnames):
                rows.append((grp, name, None, cov[i, i], sd[i]))
            for j in range(term.p):
                for i in range(j + 1, term.p):
                    corr = cov[i, j] / (sd[i] * sd[j]) if sd[i] > 0 and sd[j] > 0 else np.nan
                    rows.append((grp, term.colnames[j], term.colnames[i], cov[i, j], corr))
        rows.append(("Residual", None, None, self.scale, self.sigma))
        return pd.DataFrame(rows, columns=["grp", "var1", "var2", "vcov", "sdcor"])

    @cached_property
    def ranef(self) -> dict[str, pd.DataFrame]:
        """Conditional modes b per grouping factor (levels x coefficients)."""
        out: dict[str, pd.DataFrame] = {}
        for term, T, u in zip(self.spec.terms, self._factors(), self.u):
            frame = pd.DataFrame(u @ T.T, index=pd.Index(term.levels, name=term.label),
                                 columns=list(term.colnames))
            prev = out.get(term.label)
            if prev is None:
                out[term.label] = frame
                continue
            # Terms on one factor share its levels; a repeated column name gets the term's expr.
            clash = frame.columns.intersection(prev.columns)
            frame = frame.rename(columns={c: f"{c}_{term.expr}" for c in clash})
            out[term.label] = pd.concat([prev, frame], axis=1)
        return out

    @cached_property
    def fittedvalues(self) -> np.ndarray:
        zb = np.zeros(self.nobs)
        for term, T, u in zip(self.spec.terms, self._factors(), self.u):
            b = u @ T.T
            zb += np.einsum("ij,ij->i", term.zraw, b[term.codes])
        return self.spec.X @ self.beta + zb

    @property
    def resid(self) -> np.ndarray:
        return self.y - self.fittedvalues

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
    simulate = simulate        # mixboot.simulate with this fit as ``result``

    def summary(self) -> str:
        return summary_text(self)

    def __repr__(self) -> str:
        if self.from_parameters:
            return (f"<LMMResult {self.formula!r} from parameters: beta "
                    f"{np.round(self.beta, 4).tolist()}, sigma {self.sigma:.4g}, "
                    f"theta {np.round(self.theta, 4).tolist()}, nobs {self.nobs}>")
        kind = "REML" if self.REML else "ML"
        return (f"<LMMResult {self.formula!r} fit by {kind}: objective {self.objective:.4f}, "
                f"nobs {self.nobs}, theta {np.round(self.theta, 4).tolist()}>")


def build_result(model, theta: np.ndarray, optsum: OptSummary, y: np.ndarray | None = None
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
    d = np.diagonal(fac.L[0])
    logdet_z = float(np.log(fac.C[0].reshape(ws.l1, -1)[:, ::ws.p1 + 1]).sum()
                     if ws.p1 == 1 else np.linalg.slogdet(fac.C[0])[1].sum())
    logdet_z += 2.0 * np.log(d[:ws.qr]).sum()
    arr = [np.asarray(a) for a in (theta, beta[0])]
    for a in arr + u:
        a.setflags(write=False)
    vc = ws.vcov_unscaled(fac)
    vc.setflags(write=False)
    return LMMResult(model=model, y=y, theta=arr[0], beta=arr[1], sigma=float(sigma[0]),
                     objective=float(fac.objective[0]), logdet_z=logdet_z,
                     pwrss=float(d[-1] ** 2), u=tuple(u), vcov_unscaled=vc, optsum=optsum)
