"""The immutable result of a GLMM fit, built whole by :func:`build_glmm_result`."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy import stats

from . import _html
from .newton import fd_derivatives
from .optimize import OptSummary
from .predict import predict
from .result import FitView
from .simulate import simulate
from .summary import format_table, glmm_title

if TYPE_CHECKING:
    from .family import Family

__all__ = ["GLMMResult", "build_glmm_result"]


@dataclass(frozen=True, eq=False)
class GLMMResult(FitView):
    """Estimates of a generalized linear mixed model (glmer's quantities).

    ``objective`` is -2 log-likelihood by the Laplace approximation (``nAGQ=1``),
    adaptive Gauss-Hermite quadrature (``nAGQ > 1``; the full -2 log-likelihood,
    whereas glmer leaves out a constant that depends only on the data) or the
    ``nAGQ=0`` criterion.  ``theta`` is the relative covariance factor with the
    scale fixed at 1, in lme4's order.  ``bse`` and ``vcov``: from the
    finite-difference Hessian of the criterion over (theta, beta) for ``nAGQ >= 1``
    (glmer's default), from the penalized information given theta (``vcov_method``
    "rx") for ``nAGQ=0`` or where that Hessian is not positive definite.

    Examples
    --------
    >>> import mixboot as mb
    >>> g = mb.fit("cbind(incidence, size - incidence) ~ period + (1 | herd)",
    ...            data=mb.datasets.load("cbpp"), family="binomial")
    >>> list(g.fe_params.index)
    ['(Intercept)', 'period2', 'period3', 'period4']
    >>> g.theta.shape, g.family.name
    ((1,), 'binomial')
    """

    model: object = field(repr=False)
    theta: np.ndarray
    beta: np.ndarray
    u: tuple = field(repr=False)
    eta: np.ndarray = field(repr=False)
    objective: float
    vcov_matrix: np.ndarray = field(repr=False)
    vcov_method: str = field(repr=False)
    optsum: OptSummary = field(repr=False)
    #: the response fitted when it is not the model's own (a bootstrap replicate)
    response: np.ndarray | None = field(default=None, repr=False)

    # -- identity ---------------------------------------------------------------
    @property
    def family(self) -> Family:
        return self.model.family

    @property
    def nAGQ(self) -> int:
        return self.model.nAGQ

    @property
    def y(self) -> np.ndarray:
        """The response as fitted: proportions (binomial) or counts (Poisson)."""
        return self.spec.y if self.response is None else self.response

    # -- fixed effects ------------------------------------------------------------
    @cached_property
    def vcov(self) -> pd.DataFrame:
        names = list(self.spec.fe_names)
        return pd.DataFrame(self.vcov_matrix, index=names, columns=names)

    @cached_property
    def bse(self) -> pd.Series:
        return pd.Series(
            np.sqrt(np.diag(self.vcov_matrix)), index=self.fe_params.index, name="Std. Error"
        )

    @property
    def tvalues(self) -> pd.Series:
        """Wald z values (glmer's "z value")."""
        return (self.fe_params / self.bse).rename("z value")

    @property
    def pvalues(self) -> pd.Series:
        """Two-sided Wald z p-values, as glmer's summary."""
        return pd.Series(
            2 * stats.norm.sf(np.abs(self.tvalues)), index=self.fe_params.index, name="Pr(>|z|)"
        )

    def coef_table(self) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "Estimate": self.fe_params,
                "Std. Error": self.bse,
                "z value": self.tvalues,
                "Pr(>|z|)": self.pvalues,
            }
        )

    def conf_int(self, level: float = 0.95) -> pd.DataFrame:
        """Wald intervals for the fixed effects on the link scale."""
        if not 0 < level < 1:
            raise ValueError(f"level must be between 0 and 1, got {level!r}")
        q = stats.norm.ppf(0.5 + level / 2)
        return pd.DataFrame(
            {"lower": self.fe_params - q * self.bse, "upper": self.fe_params + q * self.bse}
        )

    # -- random effects -------------------------------------------------------------
    @cached_property
    def varcorr(self) -> pd.DataFrame:
        """lme4's as.data.frame(VarCorr()): grp, var1, var2, vcov, sdcor (no residual row)."""
        return pd.DataFrame(
            self._varcorr_rows(1.0), columns=["grp", "var1", "var2", "vcov", "sdcor"]
        )

    @cached_property
    def fittedvalues(self) -> np.ndarray:
        """Fitted means on the response scale (proportions for binomial)."""
        return self.family.link.linkinv(self.eta)

    @property
    def resid(self) -> np.ndarray:
        """Response residuals y - mu."""
        return self.y - self.fittedvalues

    def predict(
        self,
        newdata: pd.DataFrame | None = None,
        *,
        type: str = "link",
        re_form: str | None = None,
        allow_new_levels: bool = False,
    ) -> np.ndarray | pd.Series:
        """Predictions on the link (default, as lme4) or response scale; ``newdata``,
        ``re_form`` and ``allow_new_levels`` as :func:`mixboot.predict`."""
        if type not in ("link", "response"):
            raise ValueError(f"type must be 'link' or 'response', got {type!r}")
        if newdata is None and re_form is None:
            eta = np.array(self.eta)
        else:
            # lme4's predict on the link scale: X beta + Z b (+ offset) for the rows
            eta = predict(self, newdata, re_form=re_form, allow_new_levels=allow_new_levels)
        if type == "link":
            return eta
        mu = self.family.link.linkinv(np.asarray(eta, dtype=float))
        return pd.Series(mu, index=eta.index, name=eta.name) if isinstance(eta, pd.Series) else mu

    # -- likelihood -------------------------------------------------------------------
    @property
    def loglik(self) -> float:
        return -0.5 * self.objective

    @property
    def deviance(self) -> float:
        """-2 log-likelihood (the "deviance" column of glmer's summary)."""
        return self.objective

    @property
    def n_params(self) -> int:
        return self.spec.p + self.spec.n_theta

    @property
    def aic(self) -> float:
        return self.objective + 2 * self.n_params

    @property
    def bic(self) -> float:
        return self.objective + self.n_params * np.log(self.nobs)

    @property
    def df_resid(self) -> int:
        return self.nobs - self.n_params

    simulate = simulate  # mixboot.simulate with this fit as ``result``

    # -- printing -----------------------------------------------------------------------
    def summary(self) -> str:
        fam = self.family
        out = [
            glmm_title(self),
            f" Family: {fam.name}  ( {fam.link.name} )",
            f"Formula: {self.formula}",
            "",
            format_table(
                [
                    [
                        f"{self.aic:.1f}",
                        f"{self.bic:.1f}",
                        f"{self.loglik:.1f}",
                        f"{self.deviance:.1f}",
                        str(self.df_resid),
                    ]
                ],
                ["AIC", "BIC", "logLik", "deviance", "df.resid"],
                align_left=0,
            ),
            "",
            "Random effects:",
        ]
        rows = []
        vc = self.varcorr
        for grp, sub in vc.groupby("grp", sort=False):
            var = sub[sub["var2"].isna()]
            for i, (_, row) in enumerate(var.iterrows()):
                rows.append(
                    [
                        grp if i == 0 else "",
                        row["var1"],
                        f"{row['vcov']:.4g}",
                        f"{row['sdcor']:.4g}",
                    ]
                )
        out.append(format_table(rows, ["Groups", "Name", "Variance", "Std.Dev."], align_left=2))
        groups = ", ".join(f"{k}, {v}" for k, v in self.ngroups.items())
        out += [f"Number of obs: {self.nobs}, groups:  {groups}", "", "Fixed effects:"]
        tab = self.coef_table()
        out.append(
            format_table(
                [
                    [n, f"{b:.4f}", f"{se:.4f}", f"{z:.2f}", "<2e-16" if p < 2e-16 else f"{p:.3g}"]
                    for n, (b, se, z, p) in zip(tab.index, tab.to_numpy())
                ],
                ["", "Estimate", "Std. Error", "z value", "Pr(>|z|)"],
            )
        )
        if self.is_singular:
            out += ["", "boundary (singular) fit: see is_singular"]
        if not self.converged:
            out += ["", f"optimizer did not converge: {self.optsum.returncode}"]
        return "\n".join(out)

    def __repr__(self) -> str:
        return (
            f"<GLMMResult {self.formula!r} {self.family.name}({self.family.link.name}), "
            f"nAGQ={self.nAGQ}: objective {self.objective:.4f}, nobs {self.nobs}, "
            f"theta {np.round(self.theta, 4).tolist()}>"
        )

    def _repr_html_(self) -> str:
        return _html.glmm(self)


def build_glmm_result(
    model,
    x: np.ndarray,
    u: np.ndarray,
    optsum: OptSummary,
    *,
    y: np.ndarray | None = None,
    hessian: bool = True,
    known_hessian: np.ndarray | None = None,
) -> GLMMResult:
    """Every estimate at x = (theta, beta) with modes near ``u``, for response ``y``
    (the model's own by default).  ``hessian=False`` skips the finite-difference
    Hessian (the costly part): ``vcov`` then comes from the penalized information
    given theta (``vcov_method`` "rx"), as for ``nAGQ=0``.  ``known_hessian``: that
    Hessian at x when the optimizer already has it (Newton's last stencil)."""
    spec, ws = model.spec, model.workspace
    k = spec.n_theta
    x = model.canonical(np.asarray(x, dtype=float))
    theta, beta = x[:k], x[k:]
    response = None if y is None else np.asarray(y, dtype=float)
    y = (spec.y if response is None else response)[None]
    if model.nAGQ == 0:
        st = model.stage1(theta[None], y)
        beta = st.beta[0]
        crit = st.laplace
    else:
        st, crit = model.stage2(np.concatenate([theta, beta])[None], y, u[None])
    objective = float(crit[0]) + (model.c0 if response is None else float(model.saturated(y)[0]))
    vcov, method = None, "rx"
    if model.nAGQ >= 1 and hessian:
        if known_hessian is not None and np.all(np.isfinite(known_hessian)):
            H = known_hessian
        else:
            xx = np.concatenate([theta, beta])[None]
            H = fd_derivatives(
                lambda pts, which: model.stage2(pts, y[which * 0], st.u[which * 0])[1], xx
            )[2][0]
        H = 0.5 * (H + H.T)
        try:
            np.linalg.cholesky(H)
            vcov = 2.0 * np.linalg.inv(H)[k:, k:]
            method = "hessian"
        except np.linalg.LinAlgError:
            warnings.warn(
                "the Hessian of the criterion is not positive definite: standard "
                "errors from the penalized information given theta (lme4's "
                "use.hessian = FALSE)",
                UserWarning,
                stacklevel=3,
            )
    if vcov is None:
        vcov = ws.vcov_rx(theta, st.eta[0])
    uu, off = [], 0
    for t in spec.terms:
        uu.append(np.array(st.u[0, off : off + t.q].reshape(t.nlevels, t.p)))
        off += t.q
    for a in (theta, beta, vcov, *uu):
        a.setflags(write=False)
    if response is not None:
        response = response.copy()
        response.setflags(write=False)
    return GLMMResult(
        model=model,
        theta=theta,
        beta=np.array(beta),
        u=tuple(uu),
        eta=st.eta[0].copy(),
        objective=objective,
        vcov_matrix=vcov,
        vcov_method=method,
        optsum=optsum,
        response=response,
    )
