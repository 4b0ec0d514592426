"""Optimizer backends for theta and the fit log.

A fit minimizes the profiled criterion over theta.  Two methods:

* ``"LN_BOBYQA"``: NLopt's BOBYQA, the derivative-free, bound-constrained method
  lme4 and MixedModels.jl use; one evaluation per call.
* ``"newton"``: the batched finite-difference Newton method of
  :mod:`mixboot.newton` (unconstrained over an equivalent parametrization, the
  bounds restored by sign flips); a dozen evaluations per call, so far fewer
  calls.  For models whose workspace is dense.

``"auto"`` (the default) uses Newton where it applies and falls back to BOBYQA,
from the best point found, when Newton does not converge.  Large models (the
sparse workspace, one theta per evaluation) refit with a known approximate
Hessian (the fit's) use a single-theta quasi-Newton method instead of the
batched one (:func:`newton_single`), with the same BOBYQA fallback.  Fits and refits
follow this one policy (:func:`minimize_batch`).  The settings and the
outcome of one optimization live together in an :class:`OptSummary`.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field, replace

import nlopt
import numpy as np

from .newton import FD_STEP, MAX_STEP, newton_batch, zero_small_batch

__all__ = [
    "BatchOptimum",
    "ConvergenceWarning",
    "OptSummary",
    "minimize_batch",
    "minimize_theta",
    "fit_theta",
    "newton_single",
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


def _newton_codes(conv, evals, maxeval: int) -> list[str]:
    """A return code per problem after Newton steps."""
    return [
        "FTOL_REACHED" if c else ("MAXEVAL_REACHED" if e >= maxeval else "NEWTON_STALLED")
        for c, e in zip(conv, evals)
    ]


def minimize_batch(
    evaluate,
    theta0: np.ndarray,
    lower: np.ndarray,
    settings: OptSummary,
    *,
    canonical,
    newton: bool = True,
    hessian: np.ndarray | None = None,
    keep_sign: bool = False,
    finish: bool = False,
) -> BatchOptimum:
    """The optimizer policy of every fit and refit: B problems minimized together.

    1. Batched Newton from ``theta0`` (B, k), when ``newton`` (dense workspaces)
       and the settings allow it; else, when ``hessian`` (k, k) -- an
       approximate Hessian of the criterion near ``theta0``, e.g. the fit's for
       refits of a large model -- is given (and finite), the single-theta
       quasi-Newton method :func:`newton_single`, one problem at a time;
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
    use_single = (
        not use_newton
        and hessian is not None
        and bool(np.all(np.isfinite(hessian)))
        and method in ("auto", "newton")
    )
    hessian_out = np.full((B, k, k), np.nan)
    if use_newton:
        theta, f, conv, evals = newton_batch(
            evaluate,
            theta0,
            ftol_rel=settings.ftol_rel,
            keep_sign=(lower == 0) if keep_sign else None,
            finish=finish,
            hessian_out=hessian_out,
            max_evals=settings.maxeval,
        )
        methods = ["newton"] * B
        codes = _newton_codes(conv, evals, settings.maxeval)
    elif use_single:
        assert hessian is not None
        theta, f = theta0.copy(), np.full(B, np.inf)
        conv, evals = np.zeros(B, dtype=bool), np.zeros(B, dtype=np.int64)
        for b in range(B):
            one = np.array([b])
            theta[b], f[b], conv[b], evals[b] = newton_single(
                lambda th, one=one: evaluate(th, np.repeat(one, th.shape[0])),
                theta0[b],
                hessian,
                ftol_rel=settings.ftol_rel,
                max_evals=settings.maxeval,
            )
        methods = ["quasi-newton"] * B
        codes = _newton_codes(conv, evals, settings.maxeval)
    else:
        theta, f = theta0.copy(), np.full(B, np.inf)
        conv, evals = np.zeros(B, dtype=bool), np.zeros(B, dtype=np.int64)
        methods, codes = [""] * B, ["NOT_RUN"] * B
    first = use_newton or use_single
    if method != "newton" or not first:
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
            hessian_out[b] = np.nan
            evals[b] += bob.evaluations
            methods[b] = f"{methods[b]}+LN_BOBYQA" if first else "LN_BOBYQA"
            codes[b] = bob.returncode
    theta = canonical(theta)
    before = theta.copy()
    theta, f = zero_small_batch(evaluate, theta, lower, settings.xtol_zero_abs, f)
    hessian_out[np.any(theta != before, axis=1)] = np.nan
    return BatchOptimum(
        theta=theta,
        fmin=f,
        converged=conv & np.isfinite(f),
        evaluations=evals,
        method=tuple(methods),
        returncode=tuple(codes),
        hessian=hessian_out,
    )


# The single-theta quasi-Newton method (large models).
#: Iterations before a search counts as stalled (BOBYQA takes over).
SINGLE_MAX_ITER = 20
#: Below this predicted decrease (criterion units) gradients are central differences.
SINGLE_CENTRAL = 0.1
#: A last step tested by one evaluation may end a search once the predicted decrease is
#: below this times sqrt(tolerance) (absolute; see :func:`newton_single`).
SINGLE_FINISH = 0.1
#: A central-difference iteration whose predicted decrease is above this fraction of the
#: last one's switches to a full finite-difference Hessian.
SINGLE_SLOW = 0.1
#: A forward-difference iteration whose predicted decrease is above this fraction of the
#: last one's switches to central differences (and their exact Hessian diagonal).
SINGLE_SLOW_FORWARD = 0.25


def newton_single(
    evaluate,
    theta0: np.ndarray,
    hessian: np.ndarray,
    *,
    ftol_rel: float,
    max_evals: int,
) -> tuple[np.ndarray, float, bool, int]:
    """Minimize one criterion from ``theta0`` with an approximate Hessian known in advance.

    For large models, whose criterion is evaluated one theta at a time: a refit
    starts at the fit's theta, and the fit's finite-difference Hessian (computed
    once) is close to each replicate's.  So no Hessian stencil is evaluated per
    iteration (the batched method's ``1 + 2k + k(k-1)/2`` points), only a gradient:

    * far from the optimum (predicted decrease above :data:`SINGLE_CENTRAL`),
      forward differences, their ``h/2 H_ii`` bias removed with the Hessian: k
      evaluations, while the predicted decrease falls fast enough
      (:data:`SINGLE_SLOW_FORWARD`);
    * nearer, central differences (k more, reusing the forward points), which
      also give the exact diagonal of the Hessian; the off-diagonal elements keep
      the correlations of the given Hessian.  Newton then converges quadratically
      where those correlations hold; where the predicted decrease does not fall
      by a factor of 10 an iteration (:data:`SINGLE_SLOW`) the off-diagonal
      elements come from differences too (the batched method's stencil).

    Each step is the Newton step (eigenvalues of the Hessian made positive,
    length capped), accepted by an Armijo test, else backtracked.  A search
    converges on a central gradient whose predicted decrease is below
    ``ftol_rel * max(1, |f|)``; or, once that decrease is below
    ``SINGLE_FINISH * sqrt(tolerance)``, by a last step whose decrease one
    evaluation confirms to 10% (the error left is second order in the predicted
    decrease).  ``evaluate(theta (b, k)) -> (b,)``.  Returns theta, criterion,
    converged, evaluations; not converged when it stalls (callers go on with BOBYQA
    from the point returned, the best found).
    """
    x = np.array(theta0, dtype=float)
    k = x.size
    H = _positive_definite(np.asarray(hessian, dtype=float))
    pairs = [(i, j) for i in range(k) for j in range(i + 1, k)]
    f = float(evaluate(x[None])[0])
    evals = 1
    central = full = False
    last_pred = np.inf
    for _ in range(SINGLE_MAX_ITER):
        if not np.isfinite(f) or evals + 2 * k + len(pairs) + 1 > max_evals:
            break
        h = FD_STEP * np.maximum(1.0, np.abs(x))
        fp = evaluate(x + np.diag(h))
        evals += k
        if not central:
            g = (fp - f) / h - 0.5 * h * np.diag(H)
            d, pred = _newton_step(g, H)
            # near the optimum, or slow progress (the given Hessian is off)
            central = pred <= SINGLE_CENTRAL or pred > SINGLE_SLOW_FORWARD * last_pred
            last_pred = np.inf if central else pred
        if central:
            fm = evaluate(x - np.diag(h))
            evals += k
            g = (fp - fm) / (2.0 * h)
            curvature = (fp - 2.0 * f + fm) / (h * h)
            if full and pairs:
                H = _fd_hessian(evaluate, x, h, f, fp, curvature, pairs)
                evals += len(pairs)
            else:
                H = _with_diagonal(H, curvature)
            d, pred = _newton_step(g, H)
            # Slow progress: the given correlations are off; from now on the whole
            # Hessian comes from differences (k(k-1)/2 more points an iteration).
            full = full or pred > SINGLE_SLOW * last_pred
            last_pred = pred
        if not (np.all(np.isfinite(g)) and np.all(np.isfinite(H)) and np.isfinite(pred)):
            break
        tol = ftol_rel * max(1.0, abs(f))
        if central and pred <= tol:
            return x, f, True, evals
        if central and pred <= max(tol, SINGLE_FINISH * np.sqrt(tol)):
            trial = x + d
            ft = float(evaluate(trial[None])[0])
            evals += 1
            if np.isfinite(ft) and abs((f - ft) - pred) <= 0.1 * pred:
                return trial, ft, True, evals
            if np.isfinite(ft) and ft < f:
                x, f = trial, ft
                continue
        slope = float(g @ d)
        alpha, moved = 1.0, False
        for _ in range(8):
            trial = x + alpha * d
            ft = float(evaluate(trial[None])[0])
            evals += 1
            if np.isfinite(ft) and ft <= f + 1e-4 * alpha * slope:
                x, f, moved = trial, ft, True
                break
            alpha *= 0.25
        if not moved:
            break
    return x, f, False, evals


def _fd_hessian(evaluate, x, h, f, fp, curvature, pairs) -> np.ndarray:
    """The Hessian at x by differences: the diagonal given, f(x + h_i e_i + h_j e_j) for the rest."""
    k = x.size
    pts = np.array([x + h * (np.eye(k)[i] + np.eye(k)[j]) for i, j in pairs])
    fij = evaluate(pts)
    H = np.diag(curvature)
    for (i, j), v in zip(pairs, fij):
        H[i, j] = H[j, i] = (v - fp[i] - fp[j] + f) / (h[i] * h[j])
    return H


def _positive_definite(H: np.ndarray) -> np.ndarray:
    """H with its eigenvalues replaced by their absolute values (floored)."""
    w, V = np.linalg.eigh(0.5 * (H + H.T))
    w = np.abs(w)
    w = np.maximum(w, 1e-8 * max(w.max(), 1e-12))
    return (V * w) @ V.T


def _with_diagonal(H: np.ndarray, diag: np.ndarray) -> np.ndarray:
    """H rescaled symmetrically to the diagonal ``diag`` (correlations kept)."""
    top = max(float(np.abs(diag).max()), 1e-12) if np.all(np.isfinite(diag)) else 0.0
    if top == 0.0:
        return H
    scale = np.sqrt(np.maximum(diag, 1e-8 * top) / np.diag(H))
    return H * scale[:, None] * scale[None, :]


def _newton_step(g: np.ndarray, H: np.ndarray) -> tuple[np.ndarray, float]:
    """The Newton step -H^-1 g (eigenvalues made positive, length capped) and the
    decrease the quadratic model predicts for it."""
    w, V = np.linalg.eigh(H)
    w = np.abs(w)
    w = np.maximum(w, 1e-8 * max(w.max(), 1e-12))
    d = -(V @ ((g @ V) / w))
    d = d * min(1.0, MAX_STEP / max(float(np.abs(d).max()), 1e-300))
    pred = -float(g @ d) - 0.5 * float(d @ H @ d)
    return d, pred


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
