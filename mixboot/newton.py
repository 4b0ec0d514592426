"""Batched Newton minimization of the profiled criterion over theta.

Many independent problems (one per replicate, or a single fit) are minimized
together; ``evaluate(theta, which)`` returns the criterion of problem
``which[i]`` at ``theta[i]`` for a whole batch in one call, so Python overhead
is paid per Newton iteration, not per problem.

* The profiled criterion is smooth in theta over all of R^k, and flipping the
  sign of a column of a relative covariance factor leaves it unchanged.  So the
  bound "diagonal >= 0" only picks one of equivalent solutions: we optimize
  without bounds and flip signs afterwards (``ModelSpec.canonical_theta``).
* Gradient and Hessian come from finite differences on a stencil of
  ``1 + 2k + k(k-1)/2`` points around the iterate (see :func:`stencil`).
* Each step is the Newton step with the Hessian's eigenvalues replaced by their
  absolute values (a descent direction under negative curvature), capped in
  length.  The stencil is evaluated *at the trial point* in the same call that
  tests it: an accepted step (the usual case) costs one batched call.  A
  rejected step backtracks, one point per problem per call.
* A problem stops when the Newton model predicts a decrease below the tolerance,
  or its gradient vanishes; one that stalls is reported as not converged (the
  callers then fall back to BOBYQA).
"""
from __future__ import annotations

import numpy as np

__all__ = ["newton_batch", "stencil", "zero_small_batch"]

FD_STEP = 1e-4
MAX_ITER = 60
MAX_STEP = 2.0
_ARMIJO = 1e-4


def stencil(k: int) -> np.ndarray:
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


def _direction(g: np.ndarray, H: np.ndarray) -> np.ndarray:
    w, V = np.linalg.eigh(H)
    scale = np.maximum(np.abs(w).max(axis=1, keepdims=True), 1e-12)
    w = np.maximum(np.abs(w), 1e-8 * scale)
    d = -np.einsum("bij,bj->bi", V, np.einsum("bji,bj->bi", V, g) / w)
    norm = np.abs(d).max(axis=1, keepdims=True)
    return d * np.minimum(1.0, MAX_STEP / np.maximum(norm, 1e-300))


class _Stencils:
    """Evaluates the stencil around a batch of points in one call."""

    def __init__(self, evaluate, k: int):
        self.evaluate = evaluate
        self.k = k
        self.offsets = stencil(k)
        self.npts = self.offsets.shape[0]

    def __call__(self, th: np.ndarray, idx: np.ndarray):
        h = FD_STEP * np.maximum(1.0, np.abs(th))
        pts = (th[:, None, :] + self.offsets[None, :, :] * h[:, None, :]).reshape(-1, self.k)
        fv = self.evaluate(pts, np.repeat(idx, self.npts)).reshape(idx.size, self.npts)
        g, H = _derivatives(fv, self.k, h)
        return fv[:, 0], g, H


def newton_batch(evaluate, theta0: np.ndarray, *, ftol_rel: float, max_evals: int | None = None):
    """Minimize B independent criteria from theta0 (B, k); returns theta, f, converged, evals.

    A problem that has used ``max_evals`` evaluations stops, not converged.
    """
    theta = np.array(theta0, dtype=float)
    B, k = theta.shape
    around = _Stencils(evaluate, k)
    npts = around.npts
    reps = np.arange(B)
    f, g, H = around(theta, reps)
    evals = np.full(B, npts, dtype=np.int64)
    converged = np.zeros(B, dtype=bool)
    active = np.isfinite(f) & np.isfinite(g).all(axis=1) & np.isfinite(H).all(axis=(1, 2))
    for _ in range(MAX_ITER):
        if max_evals is not None:
            active &= evals < max_evals
        idx = np.flatnonzero(active)
        if idx.size == 0:
            break
        d = _direction(g[idx], H[idx])
        slope = np.einsum("bi,bi->b", g[idx], d)
        tol = ftol_rel * np.maximum(1.0, np.abs(f[idx]))
        xscale = np.maximum(1.0, np.abs(theta[idx]).max(axis=1))
        done = (-0.5 * slope <= tol) | (np.abs(g[idx]).max(axis=1) * xscale <= 1e-9 * np.maximum(1.0, np.abs(f[idx])))
        converged[idx[done]] = True
        active[idx[done]] = False
        idx, d, slope = idx[~done], d[~done], slope[~done]
        if idx.size == 0:
            break
        # Speculative full step: the stencil at the trial point also tests it.
        trial = theta[idx] + d
        ft, gt, Ht = around(trial, idx)
        evals[idx] += npts
        ok = np.isfinite(ft) & (ft <= f[idx] + _ARMIJO * slope)
        good = idx[ok]
        theta[good], f[good], g[good], H[good] = trial[ok], ft[ok], gt[ok], Ht[ok]
        bad = np.flatnonzero(~ok)
        if bad.size:
            moved = _backtrack(evaluate, theta, f, idx[bad], d[bad], slope[bad], evals)
            if moved.size:
                f[moved], g[moved], H[moved] = around(theta[moved], moved)
                evals[moved] += npts
            stalled = np.setdiff1d(idx[bad], moved)
            active[stalled] = False
        bad_derivs = ~(np.isfinite(g[idx]).all(axis=1) & np.isfinite(H[idx]).all(axis=(1, 2)))
        active[idx[bad_derivs]] = False
    return theta, f, converged, evals


def _backtrack(evaluate, theta, f, idx, d, slope, evals) -> np.ndarray:
    """Shorter steps for problems ``idx`` until sufficient decrease; returns those that moved."""
    alpha = np.full(idx.size, 0.25)
    accepted = np.zeros(idx.size, dtype=bool)
    for _ in range(11):
        todo = np.flatnonzero(~accepted)
        if todo.size == 0:
            break
        trial = theta[idx[todo]] + alpha[todo, None] * d[todo]
        ft = evaluate(trial, idx[todo])
        evals[idx[todo]] += 1
        ok = np.isfinite(ft) & (ft <= f[idx[todo]] + _ARMIJO * alpha[todo] * slope[todo])
        good = todo[ok]
        accepted[good] = True
        theta[idx[good]] = trial[ok]
        f[idx[good]] = ft[ok]
        alpha[todo[~ok]] *= 0.25
    return idx[accepted]


def zero_small_batch(evaluate, theta, lower, tol):
    """Bounded elements below ``tol`` go to exactly zero where that is no worse."""
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
