"""Optimizer backends for theta and the fit log.

A fit minimizes the profiled criterion over theta.  Two methods:

* ``"LN_BOBYQA"``: NLopt's BOBYQA, the derivative-free, bound-constrained method
  lme4 and MixedModels.jl use; one evaluation per call.
* ``"newton"``: the batched finite-difference Newton method of
  :mod:`mixboot.newton` (unconstrained over an equivalent parametrization, the
  bounds restored by sign flips); a dozen evaluations per call, so far fewer
  calls.  For models whose workspace is dense.

``"auto"`` (the default) uses Newton where it applies and falls back to BOBYQA,
from the best point found, when Newton does not converge.  The settings and the
outcome of one optimization live together in an :class:`OptSummary`.
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field, replace

import nlopt
import numpy as np

from .newton import newton_batch

__all__ = ["ConvergenceWarning", "OptSummary", "minimize_theta", "minimize_theta_newton"]

_SUCCESS = {nlopt.SUCCESS: "SUCCESS", nlopt.STOPVAL_REACHED: "STOPVAL_REACHED",
            nlopt.FTOL_REACHED: "FTOL_REACHED", nlopt.XTOL_REACHED: "XTOL_REACHED"}
_FAILURE = {nlopt.MAXEVAL_REACHED: "MAXEVAL_REACHED", nlopt.MAXTIME_REACHED: "MAXTIME_REACHED",
            nlopt.FAILURE: "FAILURE", nlopt.INVALID_ARGS: "INVALID_ARGS",
            nlopt.OUT_OF_MEMORY: "OUT_OF_MEMORY", nlopt.ROUNDOFF_LIMITED: "ROUNDOFF_LIMITED",
            nlopt.FORCED_STOP: "FORCED_STOP"}


METHODS = ("auto", "newton", "LN_BOBYQA")


class ConvergenceWarning(UserWarning):
    """The optimizer stopped without meeting its convergence criteria."""


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

    def with_overrides(self, **overrides) -> "OptSummary":
        unknown = set(overrides) - {"optimizer", "ftol_rel", "ftol_abs", "xtol_abs",
                                    "xtol_zero_abs", "initial_step", "maxeval"}
        if unknown:
            raise TypeError(f"unknown optimizer setting(s) {sorted(unknown)}")
        method = overrides.get("optimizer", self.optimizer)
        if method not in METHODS:
            raise ValueError(f"optimizer must be one of {list(METHODS)}, got {method!r}")
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
    summary = replace(settings, optimizer="LN_BOBYQA", theta_start=theta0, theta=theta,
                      fmin=float(fmin),
                      evaluations=len(log), returncode=rc,
                      elapsed=time.perf_counter() - start, fitlog=fitlog)
    if warn and not summary.converged:
        _warn(summary)
    return summary


def _warn(summary: OptSummary) -> None:
    warnings.warn(f"optimizer {summary.optimizer} stopped with {summary.returncode} after "
                  f"{summary.evaluations} evaluations; estimates may not be at the optimum",
                  ConvergenceWarning, stacklevel=4)


def minimize_theta_newton(evaluate_batch, theta0: np.ndarray, lower: np.ndarray,
                          settings: OptSummary | None = None, *, canonical,
                          warn: bool = True) -> OptSummary:
    """Minimize by batched Newton; with optimizer "auto", finish by BOBYQA if it stalls.

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

    def one(th):
        return float(evaluate(np.asarray(th, dtype=float)[None, :], None)[0])

    start = time.perf_counter()
    theta, f, conv, _ = newton_batch(evaluate, theta0[None, :], ftol_rel=settings.ftol_rel,
                                     max_evals=settings.maxeval)
    theta = canonical(theta[0])
    rc = "FTOL_REACHED" if conv[0] else (
        "MAXEVAL_REACHED" if sum(len(a) for a in log) >= settings.maxeval else "NEWTON_STALLED")
    method, fmin = "newton", f[0]
    if not conv[0] and settings.optimizer == "auto":
        left = settings.maxeval - sum(len(a) for a in log)
        if left > 0:
            bob = minimize_theta(one, theta, lower, replace(settings, maxeval=left), warn=False)
            theta, rc, method = bob.theta, bob.returncode, "newton+LN_BOBYQA"
            fmin = bob.fmin
    # (a sign flip by ``canonical`` leaves the objective unchanged)
    theta, fmin = _zero_small(one, theta, lower, settings.xtol_zero_abs, fmin)
    fitlog = np.concatenate(log) if log else np.empty((0, k + 1))
    summary = replace(settings, optimizer=method, theta_start=theta0, theta=theta,
                      fmin=float(fmin), evaluations=len(fitlog), returncode=rc,
                      elapsed=time.perf_counter() - start, fitlog=fitlog)
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
