"""Optimizer backends for theta and the fit log.

A fit minimizes the profiled criterion over theta.  Two methods:

* ``"LN_BOBYQA"``: NLopt's BOBYQA, the derivative-free, bound-constrained method
  lme4 and MixedModels.jl use; one evaluation per call.
* ``"newton"``: the batched finite-difference Newton method of
  :mod:`mixboot.newton` (unconstrained over an equivalent parametrization, the
  bounds restored by sign flips); a dozen evaluations per call, so far fewer
  calls.  For models whose workspace is dense.

``"auto"`` (the default) uses Newton where it applies and falls back to BOBYQA,
from the best point found, when Newton does not converge.  Fits and refits
follow this one policy (:func:`minimize_batch`).  The settings and the
outcome of one optimization live together in an :class:`OptSummary`.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field, replace

import nlopt
import numpy as np

from .newton import newton_batch, zero_small_batch

__all__ = [
    "BatchOptimum",
    "ConvergenceWarning",
    "OptSummary",
    "minimize_batch",
    "minimize_theta",
    "fit_theta",
]

_SUCCESS = {
    nlopt.SUCCESS: "SUCCESS",
    nlopt.STOPVAL_REACHED: "STOPVAL_REACHED",
    nlopt.FTOL_REACHED: "FTOL_REACHED",
    nlopt.XTOL_REACHED: "XTOL_REACHED",
}
_FAILURE = {
    nlopt.MAXEVAL_REACHED: "MAXEVAL_REACHED",
    nlopt.MAXTIME_REACHED: "MAXTIME_REACHED",
    nlopt.FAILURE: "FAILURE",
    nlopt.INVALID_ARGS: "INVALID_ARGS",
    nlopt.OUT_OF_MEMORY: "OUT_OF_MEMORY",
    nlopt.ROUNDOFF_LIMITED: "ROUNDOFF_LIMITED",
    nlopt.FORCED_STOP: "FORCED_STOP",
}


METHODS = ("auto", "newton", "LN_BOBYQA")


class ConvergenceWarning(UserWarning):
    """The optimizer stopped without meeting its convergence criteria.

    Examples
    --------
    Make it an error, e.g. in a batch of fits that should stop at the first problem:

    >>> import warnings
    >>> import mixboot as mb
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("error", mb.ConvergenceWarning)
    ...     r = mb.fit("Reaction ~ Days + (Days | Subject)", data=mb.datasets.load("reaction"))
    >>> r.converged
    True
    """


@dataclass(frozen=True)
class OptSummary:
    """Optimizer settings and what the optimization did.

    ``optimizer``: "auto", "newton" or "LN_BOBYQA" as a setting; after a fit,
    the method that ran ("newton", "newton+LN_BOBYQA" or "LN_BOBYQA").

    ``ftol_rel``, ``ftol_abs`` and ``xtol_abs`` are NLopt's stopping criteria;
    ``xtol_zero_abs``: after the optimizer stops, a bounded theta element smaller
    than this is tried at exactly zero and kept there when the objective is no
    worse (a boundary optimum the optimizer only approaches slowly).
    ``fitlog`` has one row per evaluation: theta..., objective.
    """

    optimizer: str = "auto"
    ftol_rel: float = 1e-12
    ftol_abs: float = 1e-8
    xtol_abs: float = 1e-10
    xtol_zero_abs: float = 1e-3
    initial_step: float = 0.75
    maxeval: int = 100_000
    theta_start: np.ndarray | None = field(default=None, repr=False)
    theta: np.ndarray | None = field(default=None, repr=False)
    fmin: float = np.nan
    evaluations: int = 0
    returncode: str = "NOT_RUN"
    elapsed: float = 0.0
    fitlog: np.ndarray | None = field(default=None, repr=False)

    @property
    def converged(self) -> bool:
        return self.returncode in _SUCCESS.values()

    def with_overrides(self, **overrides) -> OptSummary:
        unknown = set(overrides) - {
            "optimizer",
            "ftol_rel",
            "ftol_abs",
            "xtol_abs",
            "xtol_zero_abs",
            "initial_step",
            "maxeval",
        }
        if unknown:
            raise TypeError(f"unknown optimizer setting(s) {sorted(unknown)}")
        method = overrides.get("optimizer", self.optimizer)
        if method not in METHODS:
            raise ValueError(f"optimizer must be one of {list(METHODS)}, got {method!r}")
        return replace(self, **overrides)


def minimize_theta(
    objective,
    theta0: np.ndarray,
    lower: np.ndarray,
    settings: OptSummary | None = None,
    *,
    warn: bool = True,
    zero_small: bool = True,
) -> OptSummary:
    """Minimize ``objective(theta)`` from ``theta0`` subject to ``theta >= lower`` by BOBYQA.

    ``zero_small``: finish by trying small bounded elements at zero (off when
    the caller does that step itself).
    """
    settings = settings or OptSummary()
    theta0 = np.asarray(theta0, dtype=float)
    k = theta0.size
    log: list[np.ndarray] = []

    def f(x, grad):
        val = objective(x)
        log.append(np.append(x, val))
        return val if np.isfinite(val) else 1e300

    start = time.perf_counter()
    opt = nlopt.opt(nlopt.LN_BOBYQA, k)
    opt.set_min_objective(f)
    opt.set_lower_bounds(np.where(np.isfinite(lower), lower, -np.inf).tolist())
    opt.set_ftol_rel(settings.ftol_rel)
    opt.set_ftol_abs(settings.ftol_abs)
    opt.set_xtol_abs(settings.xtol_abs)
    opt.set_maxeval(settings.maxeval)
    opt.set_initial_step(
        np.where(lower == 0, settings.initial_step, settings.initial_step / 1.5).tolist()
    )
    try:
        theta = np.asarray(opt.optimize(theta0.tolist()))
        code = opt.last_optimize_result()
        rc = _SUCCESS.get(code) or _FAILURE.get(code, str(code))
    except nlopt.RoundoffLimited:
        rc = "ROUNDOFF_LIMITED"
        theta = _best_from_log(log, theta0)
    fitlog = np.array(log) if log else np.empty((0, k + 1))
    if len(fitlog):
        # the best point evaluated (NLopt returns it, or a point no better)
        i = int(np.argmin(fitlog[:, -1]))
        theta, fmin = fitlog[i, :-1].copy(), float(fitlog[i, -1])
    else:
        fmin = objective(theta)
    if zero_small:
        theta, fmin = _zero_small(objective, theta, lower, settings.xtol_zero_abs, fmin)
    # Rounding-limited stops at an optimum are common; count them as converged
    # when the objective is no worse than every value seen.
    if rc == "ROUNDOFF_LIMITED" and len(fitlog) and fmin <= fitlog[:, -1].min() + 1e-8:
        rc = "FTOL_REACHED"
    summary = replace(
        settings,
        optimizer="LN_BOBYQA",
        theta_start=theta0,
        theta=theta,
        fmin=float(fmin),
        evaluations=len(log),
        returncode=rc,
        elapsed=time.perf_counter() - start,
        fitlog=fitlog,
    )
    if warn and not summary.converged:
        _warn(summary)
    return summary


def _warn(summary: OptSummary) -> None:
    warnings.warn(
        f"optimizer {summary.optimizer} stopped with {summary.returncode} after "
        f"{summary.evaluations} evaluations; estimates may not be at the optimum",
        ConvergenceWarning,
        stacklevel=4,
    )


@dataclass(frozen=True)
class BatchOptimum:
    """The outcome of :func:`minimize_batch` for B problems."""

    theta: np.ndarray  # (B, k), canonical (inside the bounds)
    fmin: np.ndarray  # (B,)
    converged: np.ndarray  # (B,) bool
    evaluations: np.ndarray  # (B,) int
    method: tuple  # per problem: "newton", "newton+LN_BOBYQA" or "LN_BOBYQA"
    returncode: tuple  # per problem
    #: (B, k, k) the finite-difference Hessian Newton ended with, at ``theta`` up to the
    #: sign flips into the bounds; NaN where another method (or a last step) moved theta
    hessian: np.ndarray | None = None


def minimize_batch(
    evaluate,
    theta0: np.ndarray,
    lower: np.ndarray,
    settings: OptSummary,
    *,
    canonical,
    newton: bool = True,
    keep_sign: bool = False,
    finish: bool = False,
) -> BatchOptimum:
    """The optimizer policy of every fit and refit: B problems minimized together.

    1. Batched Newton from ``theta0`` (B, k), when ``newton`` (dense workspaces)
       and the settings allow it;
    2. BOBYQA, one problem at a time, for each problem Newton did not bring to
       convergence, started from Newton's best point (or from ``theta0``);
    3. sign flips into the bounds (``canonical``), then each bounded element
       below ``settings.xtol_zero_abs`` tried at exactly zero and kept there
       where the criterion is no worse.

    ``keep_sign``: Newton steps do not carry bounded elements across zero;
    ``finish``: a confirmed last Newton step may end a search (for refits; see
    :func:`mixboot.newton.newton_batch`).

    ``evaluate(theta (b, k), which (b,)) -> (b,)`` evaluates problem
    ``which[i]`` at ``theta[i]``.  Every step is per problem, so a problem's
    numbers do not depend on which others share the batch.
    """
    theta0 = np.atleast_2d(np.asarray(theta0, dtype=float))
    B, k = theta0.shape
    method = settings.optimizer
    use_newton = newton and method in ("auto", "newton")
    hessian = np.full((B, k, k), np.nan)
    if use_newton:
        theta, f, conv, evals = newton_batch(
            evaluate,
            theta0,
            ftol_rel=settings.ftol_rel,
            keep_sign=(lower == 0) if keep_sign else None,
            finish=finish,
            hessian_out=hessian,
            max_evals=settings.maxeval,
        )
        methods = ["newton"] * B
        codes = [
            "FTOL_REACHED"
            if c
            else ("MAXEVAL_REACHED" if e >= settings.maxeval else "NEWTON_STALLED")
            for c, e in zip(conv, evals)
        ]
    else:
        theta, f = theta0.copy(), np.full(B, np.inf)
        conv, evals = np.zeros(B, dtype=bool), np.zeros(B, dtype=np.int64)
        methods, codes = [""] * B, ["NOT_RUN"] * B
    if method != "newton" or not use_newton:
        for b in np.flatnonzero(~conv):
            left = settings.maxeval - int(evals[b])
            if left <= 0:
                continue
            which = np.array([b])
            start = theta[b] if np.isfinite(f[b]) else theta0[b]
            bob = minimize_theta(
                lambda th, which=which: float(evaluate(th[None, :], which)[0]),
                canonical(start),
                lower,
                replace(settings, maxeval=left),
                warn=False,
                zero_small=False,
            )
            theta[b], f[b], conv[b] = bob.theta, bob.fmin, bob.converged
            hessian[b] = np.nan
            evals[b] += bob.evaluations
            methods[b] = "LN_BOBYQA" if not use_newton else "newton+LN_BOBYQA"
            codes[b] = bob.returncode
    theta = canonical(theta)
    before = theta.copy()
    theta, f = zero_small_batch(evaluate, theta, lower, settings.xtol_zero_abs, f)
    hessian[np.any(theta != before, axis=1)] = np.nan
    return BatchOptimum(
        theta=theta,
        fmin=f,
        converged=conv & np.isfinite(f),
        evaluations=evals,
        method=tuple(methods),
        returncode=tuple(codes),
        hessian=hessian,
    )


def fit_theta(
    evaluate_batch,
    theta0: np.ndarray,
    lower: np.ndarray,
    settings: OptSummary | None = None,
    *,
    canonical,
    newton: bool = True,
    warn: bool = True,
) -> OptSummary:
    """One fit by :func:`minimize_batch`; the evaluations are logged in ``fitlog``.

    ``evaluate_batch(theta (B, k)) -> (B,)`` evaluates several thetas in one
    call; ``canonical`` maps a theta onto the equivalent one inside the bounds.
    """
    settings = settings or OptSummary()
    theta0 = np.asarray(theta0, dtype=float)
    k = theta0.size
    log: list[np.ndarray] = []

    def evaluate(th, which):
        vals = evaluate_batch(th)
        log.append(np.column_stack([th, vals]))
        return vals

    start = time.perf_counter()
    opt = minimize_batch(
        evaluate, theta0[None, :], lower, settings, canonical=canonical, newton=newton
    )
    fitlog = np.concatenate(log) if log else np.empty((0, k + 1))
    summary = replace(
        settings,
        optimizer=opt.method[0],
        theta_start=theta0,
        theta=opt.theta[0],
        fmin=float(opt.fmin[0]),
        evaluations=len(fitlog),
        returncode=opt.returncode[0],
        elapsed=time.perf_counter() - start,
        fitlog=fitlog,
    )
    if warn and not summary.converged:
        _warn(summary)
    return summary


def _best_from_log(log, default):
    if not log:
        return np.asarray(default, dtype=float)
    arr = np.array(log)
    return arr[np.argmin(arr[:, -1]), :-1].copy()


def _zero_small(objective, theta, lower, tol, fmin=None):
    """Try bounded elements within ``tol`` of zero at exactly zero; keep what is no worse.

    ``fmin``: the objective at ``theta`` when already known.
    """
    theta = np.array(theta, dtype=float)
    fmin = objective(theta) if fmin is None else float(fmin)
    for i in np.flatnonzero((lower == 0) & (theta > 0) & (theta < tol)):
        trial = theta.copy()
        trial[i] = 0.0
        ftrial = objective(trial)
        if ftrial <= fmin:
            theta, fmin = trial, ftrial
    return theta, fmin
