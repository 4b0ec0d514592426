"""Refit a model to many responses at once: the loop at the heart of the bootstrap.

Only the response cross-products change between refits (see
:class:`mixboot.workspace.Responses`).  For models whose workspace fits in
dense arrays, all replicates are optimized together by a batched Newton method:

* The profiled criterion is smooth in theta over all of R^k, and flipping the
  sign of a column of a relative covariance factor leaves it unchanged.  So the
  bound "diagonal >= 0" only picks one of equivalent solutions: we optimize
  without bounds and flip signs afterwards (``ModelSpec.canonical_theta``).
* Gradient and Hessian come from finite differences; every stencil point of
  every replicate is evaluated in one batched call, so Python overhead is paid
  per Newton iteration, not per replicate.
* Each replicate starts at the fitted theta, usually a few Newton steps from its
  optimum.  Negative curvature is handled by using |eigenvalues| (a descent
  direction), steps are capped, and a backtracking line search keeps descent.
* A replicate that does not converge is refitted on its own by BOBYQA, and is
  flagged if that fails too.

Large models (the sparse workspace) are refitted one replicate at a time by
BOBYQA, still reusing every cross-product that does not involve y.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .optimize import OptSummary, minimize_theta
from .workspace import Responses, Workspace

__all__ = ["RefitBatch", "refit_responses"]

_FD_STEP = 1e-4
_MAX_ITER = 60
_MAX_STEP = 2.0
# Memory per batched evaluation call (bytes): bounds the stencil chunks.
_EVAL_BUDGET = 64 * 2 ** 20


@dataclass(frozen=True)
class RefitBatch:
    theta: np.ndarray        # (B, k), canonical (inside lme4's bounds)
    objective: np.ndarray    # (B,)
    beta: np.ndarray         # (B, p)
    sigma: np.ndarray        # (B,)
    converged: np.ndarray    # (B,) bool
    evaluations: np.ndarray  # (B,) int


def _evaluator(ws: Workspace, resp: Responses):
    per_point = 8 * (ws.m * ws.m * 3 + ws.m * ws.q1 * 2 + ws.q1 * ws.p1 * ws.p1 * 3)
    chunk = max(1, _EVAL_BUDGET // per_point)

    def evaluate(theta: np.ndarray, which: np.ndarray) -> np.ndarray:
        out = np.empty(theta.shape[0])
        for start in range(0, theta.shape[0], chunk):
            sl = slice(start, start + chunk)
            out[sl] = ws.factorize(theta[sl], resp.take(which[sl])).objective
        return out

    return evaluate


def _stencil(k: int) -> np.ndarray:
    """Offsets (in units of h): 0, +e_i, -e_i, e_i + e_j (i < j)."""
    rows = [np.zeros(k)]
    eye = np.eye(k)
    rows += list(eye) + list(-eye)
    rows += [eye[i] + eye[j] for i in range(k) for j in range(i + 1, k)]
    return np.array(rows)


def _derivatives(fvals: np.ndarray, k: int, h: np.ndarray):
    """Gradient and Hessian (B, k), (B, k, k) from stencil values (B, n_points)."""
    f0 = fvals[:, 0]
    fp, fm = fvals[:, 1:1 + k], fvals[:, 1 + k:1 + 2 * k]
    g = (fp - fm) / (2 * h)
    H = np.empty((fvals.shape[0], k, k))
    idx = np.arange(k)
    H[:, idx, idx] = (fp - 2 * f0[:, None] + fm) / h ** 2
    col = 1 + 2 * k
    for i in range(k):
        for j in range(i + 1, k):
            hij = (fvals[:, col] - fp[:, i] - fp[:, j] + f0) / (h[:, i] * h[:, j])
            H[:, i, j] = H[:, j, i] = hij
            col += 1
    return g, H


def _newton_direction(g: np.ndarray, H: np.ndarray) -> np.ndarray:
    w, V = np.linalg.eigh(H)
    scale = np.maximum(np.abs(w).max(axis=1, keepdims=True), 1e-12)
    w = np.maximum(np.abs(w), 1e-8 * scale)
    d = -np.einsum("bij,bj->bi", V, np.einsum("bji,bj->bi", V, g) / w)
    norm = np.abs(d).max(axis=1, keepdims=True)
    return d * np.minimum(1.0, _MAX_STEP / np.maximum(norm, 1e-300))


def newton_batch(evaluate, theta0: np.ndarray, *, ftol_rel: float):
    """Minimize B independent criteria from theta0 (B, k); returns theta, f, converged, evals."""
    theta = np.array(theta0, dtype=float)
    B, k = theta.shape
    offsets = _stencil(k)
    npts = offsets.shape[0]
    reps = np.arange(B)
    f = evaluate(theta, reps)
    evals = np.ones(B, dtype=np.int64)
    converged = np.zeros(B, dtype=bool)
    active = np.isfinite(f)
    for _ in range(_MAX_ITER):
        idx = np.flatnonzero(active)
        if idx.size == 0:
            break
        th = theta[idx]
        h = _FD_STEP * np.maximum(1.0, np.abs(th))
        pts = (th[:, None, :] + offsets[None, :, :] * h[:, None, :]).reshape(-1, k)
        fv = evaluate(pts, np.repeat(idx, npts)).reshape(idx.size, npts)
        fv[:, 0] = f[idx]
        evals[idx] += npts - 1
        g, H = _derivatives(fv, k, h)
        d = _newton_direction(g, H)
        slope = np.einsum("bi,bi->b", g, d)
        alpha = np.ones(idx.size)
        accepted = np.zeros(idx.size, dtype=bool)
        f_new = f[idx].copy()
        for _ls in range(12):
            todo = np.flatnonzero(~accepted)
            if todo.size == 0:
                break
            trial = th[todo] + alpha[todo, None] * d[todo]
            ft = evaluate(trial, idx[todo])
            evals[idx[todo]] += 1
            ok = np.isfinite(ft) & (ft <= f[idx[todo]] + 1e-4 * alpha[todo] * np.minimum(slope[todo], 0))
            good = todo[ok]
            accepted[good] = True
            f_new[good] = ft[ok]
            th[good] = trial[ok]
            alpha[todo[~ok]] *= 0.25
        decrease = f[idx] - f_new
        theta[idx] = th
        f[idx] = f_new
        tol = ftol_rel * np.maximum(1.0, np.abs(f_new))
        small_step = np.abs(alpha[:, None] * d).max(axis=1) <= 1e-7 * np.maximum(1.0, np.abs(th).max(axis=1))
        # Converged: the last accepted step changed f by no more than the tolerance
        # and the Newton model predicts no further worthwhile decrease.
        done = accepted & (decrease <= tol) & (-0.5 * slope <= 10 * tol)
        done |= ~accepted & (np.abs(g).max(axis=1) * np.maximum(1.0, np.abs(th).max(axis=1)) <= 1e-4)
        done |= accepted & small_step & (-0.5 * slope <= 10 * tol)
        converged[idx[done]] = True
        stalled = ~accepted & ~done
        active[idx[done | stalled]] = False
    return theta, f, converged, evals


def _zero_small_batch(evaluate, theta, lower, tol):
    """As the fit does: bounded elements below ``tol`` go to exactly zero if no worse."""
    theta = theta.copy()
    f = None
    for i in np.flatnonzero(lower == 0):
        rows = np.flatnonzero((theta[:, i] > 0) & (theta[:, i] < tol))
        if rows.size == 0:
            continue
        if f is None:
            f = evaluate(theta, np.arange(theta.shape[0]))
        trial = theta[rows].copy()
        trial[:, i] = 0.0
        ft = evaluate(trial, rows)
        better = ft <= f[rows]
        theta[rows[better]] = trial[better]
        f[rows[better]] = ft[better]
    return theta


def refit_responses(result, Y: np.ndarray, *, tol: float | None = None,
                    start: np.ndarray | None = None) -> RefitBatch:
    """Refit ``result``'s model to each column of Y (n x B)."""
    model = result.model
    ws: Workspace = model.workspace
    spec = model.spec
    resp = ws.responses(Y)
    B = resp.B
    theta0 = np.broadcast_to(result.theta if start is None else start, (B, spec.n_theta))
    ftol = 1e-12 if tol is None else float(tol)
    evaluate = _evaluator(ws, resp)
    if ws.dense:
        theta, f, conv, evals = newton_batch(evaluate, theta0, ftol_rel=ftol)
    else:
        theta = np.array(theta0, dtype=float)
        f = np.full(B, np.inf)
        conv = np.zeros(B, dtype=bool)
        evals = np.zeros(B, dtype=np.int64)
    redo = np.flatnonzero(~conv)
    settings = OptSummary(ftol_rel=ftol)
    for b in redo:
        one = resp.take(np.array([b]))
        opt = minimize_theta(lambda th: float(ws.factorize(th[None], one).objective[0]),
                             theta0[b], spec.lower_bounds, settings, warn=False)
        theta[b], f[b], conv[b] = opt.theta, opt.fmin, opt.converged
        evals[b] += opt.evaluations
    theta = _zero_small_batch(evaluate, spec.canonical_theta(theta), spec.lower_bounds,
                              OptSummary().xtol_zero_abs)
    fac = ws.factorize(theta, resp)
    beta, sigma = ws.fixef_sigma(fac)
    return RefitBatch(theta=theta, objective=fac.objective, beta=beta, sigma=sigma,
                      converged=conv & np.isfinite(fac.objective), evaluations=evals)
