"""Optimizer backends for theta and the fit log.

A fit minimizes the profiled criterion over theta with NLopt's BOBYQA (the
derivative-free, bound-constrained method lme4 and MixedModels.jl use).  The
settings and the outcome of one optimization live together in an
:class:`OptSummary`.
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field, replace

import nlopt
import numpy as np

__all__ = ["ConvergenceWarning", "OptSummary", "minimize_theta"]

_SUCCESS = {nlopt.SUCCESS: "SUCCESS", nlopt.STOPVAL_REACHED: "STOPVAL_REACHED",
            nlopt.FTOL_REACHED: "FTOL_REACHED", nlopt.XTOL_REACHED: "XTOL_REACHED"}
_FAILURE = {nlopt.MAXEVAL_REACHED: "MAXEVAL_REACHED", nlopt.MAXTIME_REACHED: "MAXTIME_REACHED",
            nlopt.FAILURE: "FAILURE", nlopt.INVALID_ARGS: "INVALID_ARGS",
            nlopt.OUT_OF_MEMORY: "OUT_OF_MEMORY", nlopt.ROUNDOFF_LIMITED: "ROUNDOFF_LIMITED",
            nlopt.FORCED_STOP: "FORCED_STOP"}


class ConvergenceWarning(UserWarning):
    """The optimizer stopped without meeting its convergence criteria."""


@dataclass(frozen=True)
class OptSummary:
    """Optimizer settings and what the optimization did.

    ``ftol_rel``, ``ftol_abs`` and ``xtol_abs`` are NLopt's stopping criteria;
    ``xtol_zero_abs``: after the optimizer stops, a bounded theta element smaller
    than this is tried at exactly zero and kept there when the objective is no
    worse (a boundary optimum the optimizer only approaches slowly).
    ``fitlog`` has one row per evaluation: theta..., objective.
    """

    optimizer: str = "LN_BOBYQA"
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

    def with_overrides(self, **overrides) -> "OptSummary":
        unknown = set(overrides) - {"ftol_rel", "ftol_abs", "xtol_abs", "xtol_zero_abs",
                                    "initial_step", "maxeval"}
        if unknown:
            raise TypeError(f"unknown optimizer setting(s) {sorted(unknown)}")
        return replace(self, **overrides)


def minimize_theta(objective, theta0: np.ndarray, lower: np.ndarray,
                   settings: OptSummary | None = None, *, warn: bool = True) -> OptSummary:
    """Minimize ``objective(theta)`` from ``theta0`` subject to ``theta >= lower``."""
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
    opt.set_initial_step(np.where(lower == 0, settings.initial_step, settings.initial_step / 1.5)
                         .tolist())
    try:
        theta = np.asarray(opt.optimize(theta0.tolist()))
        code = opt.last_optimize_result()
        rc = _SUCCESS.get(code) or _FAILURE.get(code, str(code))
    except nlopt.RoundoffLimited:
        rc = "ROUNDOFF_LIMITED"
        theta = _best_from_log(log, theta0)
    fitlog = np.array(log) if log else np.empty((0, k + 1))
    best = _best_from_log(log, theta)
    if objective(best) <= objective(theta):
        theta = best
    theta, fmin = _zero_small(objective, theta, lower, settings.xtol_zero_abs)
    # Rounding-limited stops at an optimum are common; count them as converged
    # when the objective is no worse than every value seen.
    if rc == "ROUNDOFF_LIMITED" and len(fitlog) and fmin <= fitlog[:, -1].min() + 1e-8:
        rc = "FTOL_REACHED"
    summary = replace(settings, theta_start=theta0, theta=theta, fmin=float(fmin),
                      evaluations=len(log), returncode=rc,
                      elapsed=time.perf_counter() - start, fitlog=fitlog)
    if warn and not summary.converged:
        warnings.warn(f"optimizer {settings.optimizer} stopped with {rc} after {len(log)} "
                      "evaluations; estimates may not be at the optimum", ConvergenceWarning,
                      stacklevel=3)
    return summary


def _best_from_log(log, default):
    if not log:
        return np.asarray(default, dtype=float)
    arr = np.array(log)
    return arr[np.argmin(arr[:, -1]), :-1].copy()


def _zero_small(objective, theta, lower, tol):
    """Try bounded elements within ``tol`` of zero at exactly zero; keep what is no worse."""
    theta = np.array(theta, dtype=float)
    fmin = objective(theta)
    for i in np.flatnonzero((lower == 0) & (theta > 0) & (theta < tol)):
        trial = theta.copy()
        trial[i] = 0.0
        ftrial = objective(trial)
        if ftrial <= fmin:
            theta, fmin = trial, ftrial
    return theta, fmin
