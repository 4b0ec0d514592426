"""Generalized linear mixed models: specification + PIRLS workspace; fits as glmer.

The fit follows glmer's two stages:

1. theta alone, with beta estimated by PIRLS alongside the random effects
   (glmer's ``nAGQ = 0`` criterion; this is the whole fit for ``nAGQ=0``);
2. for ``nAGQ >= 1``, theta and beta together on the Laplace criterion
   (``nAGQ = 1``) or on adaptive Gauss-Hermite quadrature (``nAGQ > 1``, one
   scalar random-effect term), started from stage 1.

Both stages use the optimizer policy of every fit (:func:`mixboot.optimize.minimize_batch`):
batched finite-difference Newton steps, BOBYQA where Newton stalls.  Every
evaluation starts PIRLS from the same point (stage 1: the GLM's coefficients and
u = 0; stage 2: stage 1's modes), so the criterion is a function of its
arguments alone and a refit's numbers never depend on its batch mates.

>>> import mixboot as mb
>>> cbpp = mb.datasets.load("cbpp")
>>> r = mb.fit("cbind(incidence, size - incidence) ~ period + (1 | herd)", data=cbpp,
...            family="binomial")
>>> round(r.objective, 2), round(float(r.theta[0]), 3)
(184.05, 0.642)
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from .family import Family, get_family
from .glmm_result import build_glmm_result
from .optimize import ConvergenceWarning, OptSummary, minimize_batch
from .pirls import GlmmWorkspace, PirlsState, agq_correction
from .result import SINGULAR_MESSAGE, SingularFitWarning
from .spec import ModelSpec, build_spec, check_theta_start, groups_formula
from .threads import one_blas_thread

if TYPE_CHECKING:
    from ._typing import ArrayLike
    from .glmm_result import GLMMResult

__all__ = ["GeneralizedLinearMixedModel", "Refits", "fit_glmm", "MAX_AGQ"]

MAX_AGQ = 25
#: relative tolerance of stage 1 when stage 2 follows
STAGE1_FTOL = 1e-6


class GeneralizedLinearMixedModel:
    """Specification, family and PIRLS workspace of one GLMM; holds no estimates."""

    def __init__(self, spec: ModelSpec, family: Family, *, nAGQ: int = 1):
        self.spec, self.family = spec, family
        self.nAGQ = check_nagq(nAGQ, spec)
        self.workspace = GlmmWorkspace(
            spec, family, prior_weights=spec.prior_weights, trials=spec.trials, offset=spec.offset
        )
        ws = self.workspace
        eta0 = family.link.linkfun(family.mustart(spec.y, spec.prior_weights))
        glm = ws.pirls(
            np.zeros((1, spec.n_theta)),
            np.zeros((1, spec.p)),
            spec.y[None],
            joint=True,
            eta0=eta0[None],
        )
        if not glm.converged[0]:
            raise ValueError(
                "the generalized linear model without random effects did not "
                "converge (PIRLS): check the response and predictors"
            )
        #: the GLM's coefficients: where every stage-1 evaluation starts
        self.beta_glm = glm.beta[0]
        self.c0 = float(self.saturated(spec.y[None])[0])

    def saturated(self, Y: np.ndarray) -> np.ndarray:
        """-2 log p(y | mu = y) for each row of Y (B, n): the criterion in deviance form
        plus this is -2 log-likelihood (it depends on y only)."""
        fam, pw, trials = self.family, self.spec.prior_weights, self.spec.trials
        Y = np.atleast_2d(Y)
        mu = np.clip(Y, 1e-3, 1 - 1e-3) if fam.name == "binomial" else Y + 0.5
        return np.array(
            [fam.aic(y, m, pw, trials) - fam.dev_resids(y, m, pw).sum() for y, m in zip(Y, mu)]
        )

    # -- the criteria ---------------------------------------------------------------
    @property
    def n_theta(self) -> int:
        return self.spec.n_theta

    def stage1(
        self,
        theta: np.ndarray,
        Y: np.ndarray,
        start: PirlsState | None = None,
        which: np.ndarray | None = None,
    ) -> PirlsState:
        """PIRLS over (u, beta) at each theta (B, k) for responses Y (B, n), from the
        GLM's beta and u = 0, or from problem ``which[i]`` of ``start``."""
        B = theta.shape[0]
        if start is None:
            return self.workspace.pirls(
                theta, np.broadcast_to(self.beta_glm, (B, self.spec.p)), Y, joint=True
            )
        return self.workspace.pirls(theta, start.beta[which], Y, joint=True, u0=start.u[which])

    def stage2(self, x: np.ndarray, Y: np.ndarray, u0: np.ndarray) -> tuple[PirlsState, np.ndarray]:
        """PIRLS over u at each (theta, beta) row of x; returns the state and the criterion."""
        k = self.n_theta
        theta, beta = x[:, :k], x[:, k:]
        st = self.workspace.pirls(theta, beta, Y, joint=False, u0=u0)
        crit = st.laplace
        if self.nAGQ > 1:
            crit = crit + agq_correction(self.workspace, st, theta, Y, self.nAGQ)
            crit = np.where(np.isfinite(crit), crit, np.inf)
        return st, crit

    def lower(self, stage: int) -> np.ndarray:
        lower = self.spec.lower_bounds
        return lower if stage == 1 else np.concatenate([lower, np.full(self.spec.p, -np.inf)])

    def canonical(self, x: np.ndarray) -> np.ndarray:
        k = self.n_theta
        out = np.array(x, dtype=float)
        out[..., :k] = self.spec.canonical_theta(out[..., :k])
        return out

    # -- optimization -----------------------------------------------------------------
    def optimize(
        self,
        Y: np.ndarray,
        *,
        theta0: np.ndarray,
        x0: np.ndarray | None,
        settings: OptSummary,
        stages: tuple = (1, 2),
        finish: bool = False,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, tuple, np.ndarray, np.ndarray]:
        """Fit B responses Y (B, n): stage 1 from theta0 (B, k), stage 2 from its result
        (or from x0 (B, k + p) when stage 1 is skipped).  Returns (x, fmin, converged,
        evaluations, method, u, hessian): x holds theta then beta; ``hessian`` (B, k + p,
        k + p) is Newton's last finite-difference Hessian of stage 2 (NaN where unknown)."""
        Y = np.ascontiguousarray(np.atleast_2d(Y))
        B = Y.shape[0]
        k = self.n_theta
        evals = np.zeros(B, dtype=np.int64)
        conv = np.ones(B, dtype=bool)
        u = np.zeros((B, self.workspace.q))
        method = None
        hessian = np.full((B, k + self.spec.p, k + self.spec.p), np.nan)
        if 1 in stages:
            # every evaluation starts PIRLS where it ended at the starting theta
            at_start = self.stage1(np.atleast_2d(theta0), Y)

            def eval1(theta, which):
                return self.stage1(theta, Y[which], at_start, which).laplace

            # Before stage 2 an approximate optimum is enough: stage 2 refines all.
            then2 = self.nAGQ >= 1 and 2 in stages
            first = (
                replace(settings, ftol_rel=max(settings.ftol_rel, STAGE1_FTOL))
                if then2
                else settings
            )
            opt = minimize_batch(
                eval1,
                theta0,
                self.lower(1),
                first,
                canonical=self.spec.canonical_theta,
                keep_sign=True,
                finish=finish or then2,
            )
            st = self.stage1(opt.theta, Y, at_start, np.arange(B))
            x = np.concatenate([opt.theta, st.beta], axis=1)
            u = st.u
            fmin, conv, evals, method = (
                opt.fmin,
                opt.converged & st.converged,
                opt.evaluations,
                opt.method,
            )
        else:
            x = np.array(x0, dtype=float)
            if 2 in stages:
                # Start from the fit's theta with beta and the modes that PIRLS gives
                # there for this response (the nAGQ=0 step): much nearer the optimum
                # than the fit's beta, so Newton needs fewer steps.
                st = self.workspace.pirls(x[:, :k], x[:, k:], Y, joint=True)
                ok = st.converged & np.all(np.isfinite(st.beta), axis=1)
                x[ok, k:] = st.beta[ok]
                u = np.where(ok[:, None], st.u, 0.0)
        if self.nAGQ >= 1 and 2 in stages:
            u_start = u

            def eval2(xx, which):
                return self.stage2(xx, Y[which], u_start[which])[1]

            opt = minimize_batch(
                eval2,
                x,
                self.lower(2),
                settings,
                canonical=self.canonical,
                keep_sign=True,
                finish=finish,
            )
            x, fmin = opt.theta, opt.fmin
            conv = conv & opt.converged
            evals = evals + opt.evaluations
            method = opt.method
            hessian = opt.hessian
            u = self.stage2(x, Y, u_start)[0].u
        return x, fmin, conv, evals, method, u, hessian

    def refit(
        self, Y: np.ndarray, *, start: np.ndarray, settings: OptSummary | None = None
    ) -> Refits:
        """Refit responses Y (B, n) from ``start`` = (theta, beta) of a fit, as lme4's
        ``refit``: one stage (over theta with beta from PIRLS for ``nAGQ=0``, over
        (theta, beta) otherwise), each replicate on its own."""
        Y = np.ascontiguousarray(np.atleast_2d(np.asarray(Y, dtype=float)))
        B, k = Y.shape[0], self.n_theta
        settings = settings or OptSummary()
        start = np.broadcast_to(np.asarray(start, dtype=float), (B, k + self.spec.p))
        if self.nAGQ == 0:
            x, fmin, conv, evals, _, u, _ = self.optimize(
                Y, theta0=start[:, :k], x0=None, settings=settings, stages=(1,), finish=True
            )
        else:
            # stage 2 from the fit's estimates, PIRLS started from u = 0
            x, fmin, conv, evals, _, u, _ = self.optimize(
                Y, theta0=None, x0=start, settings=settings, stages=(2,), finish=True
            )
        objective = fmin + self.saturated(Y)
        return Refits(
            theta=x[:, :k],
            beta=x[:, k:],
            objective=objective,
            u=u,
            converged=conv & np.isfinite(objective),
            evaluations=evals,
        )

    def fit(
        self, *, start: ArrayLike | None = None, optimizer: dict | None = None, warn: bool = True
    ) -> GLMMResult:
        """Fit the model to its own response and return a :class:`GLMMResult`."""
        spec = self.spec
        settings = OptSummary().with_overrides(**(optimizer or {}))
        theta0 = spec.theta_start if start is None else check_theta_start(start, spec)
        t0 = time.perf_counter()
        with one_blas_thread():  # batched PIRLS: many small products
            x, fmin, conv, evals, method, u, H = self.optimize(
                spec.y[None], theta0=theta0[None], x0=None, settings=settings
            )
        optsum = replace(
            settings,
            optimizer=method[0],
            theta_start=theta0,
            theta=x[0, : self.n_theta],
            fmin=float(fmin[0]),
            evaluations=int(evals[0]),
            returncode="FTOL_REACHED" if conv[0] else "FAILURE",
            elapsed=time.perf_counter() - t0,
        )
        if warn and not conv[0]:
            warnings.warn(
                f"the GLMM fit did not converge ({method[0]}, {int(evals[0])} "
                "evaluations); estimates may not be at the optimum",
                ConvergenceWarning,
                stacklevel=3,
            )
        result = build_glmm_result(self, x[0], u[0], optsum, known_hessian=H[0])
        if warn and result.is_singular:
            warnings.warn(SINGULAR_MESSAGE, SingularFitWarning, stacklevel=3)
        return result

    def __repr__(self) -> str:
        return (
            f"GeneralizedLinearMixedModel({self.spec.formula!r}, family={self.family.name}"
            f"({self.family.link.name}), nAGQ={self.nAGQ})"
        )


@dataclass(frozen=True)
class Refits:
    """Estimates of B refits (:meth:`GeneralizedLinearMixedModel.refit`)."""

    theta: np.ndarray  # (B, n_theta)
    beta: np.ndarray  # (B, p)
    objective: np.ndarray  # (B,) -2 log-likelihood
    u: np.ndarray  # (B, q) spherical modes
    converged: np.ndarray  # (B,)
    evaluations: np.ndarray  # (B,)


def check_nagq(nAGQ, spec: ModelSpec) -> int:
    if (
        isinstance(nAGQ, bool)
        or not isinstance(nAGQ, (int, np.integer))
        or not 0 <= nAGQ <= MAX_AGQ
    ):
        raise ValueError(f"nAGQ must be an integer from 0 to {MAX_AGQ}, got {nAGQ!r}")
    if nAGQ > 1 and (len(spec.terms) != 1 or spec.terms[0].p != 1):
        raise ValueError(
            f"nAGQ={nAGQ} (adaptive Gauss-Hermite quadrature) needs a single scalar "
            f"random-effect term such as (1 | g); this model has "
            f"{[t.expr + ' | ' + t.label for t in spec.terms]}: use nAGQ=1 (Laplace)"
        )
    return int(nAGQ)


def fit_glmm(
    formula: str,
    data,
    *,
    family,
    link=None,
    weights=None,
    offset=None,
    nAGQ: int = 1,
    groups=None,
    contrasts: dict | None = None,
    start=None,
    optimizer: dict | None = None,
):
    """Fit a GLMM (glmer's Laplace approximation by default); see :func:`mixboot.fit`."""
    fam = get_family(family, link)
    if groups is not None:
        formula = groups_formula(formula, groups)
    spec = build_spec(
        formula, data, contrasts=contrasts, family=fam, weights=weights, offset=offset
    )
    return GeneralizedLinearMixedModel(spec, fam, nAGQ=nAGQ).fit(start=start, optimizer=optimizer)
