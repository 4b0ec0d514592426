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


def _derivatives(fvals: np.ndarray, k: int, h: np.ndarray, pairs):
    """Gradient and Hessian (B, k), (B, k, k) from stencil values (B, n_points)."""
    f0 = fvals[:, :1]
    fp, fm = fvals[:, 1:1 + k], fvals[:, 1 + k:1 + 2 * k]
    g = (fp - fm) / (2 * h)
    H = np.empty((fvals.shape[0], k, k))
    diag = np.arange(k)
    H[:, diag, diag] = (fp - 2 * f0 + fm) / h ** 2
    if k > 1:
        I, J = pairs
        hij = (fvals[:, 1 + 2 * k:] - fp[:, I] - fp[:, J] + f0) / (h[:, I] * h[:, J])
        H[:, I, J] = hij
        H[:, J, I] = hij
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
        self.pairs = np.triu_indices(k, 1)   # the order of the e_i + e_j offsets

    def __call__(self, th: np.ndarray, idx: np.ndarray):
        h = FD_STEP * np.maximum(1.0, np.abs(th))
        pts = (th[:, None, :] + self.offsets[None, :, :] * h[:, None, :]).reshape(-1, self.k)
        fv = self.evaluate(pts, np.repeat(idx, self.npts)).reshape(idx.size, self.npts)
        g, H = _derivatives(fv, self.k, h, self.pairs)
        return fv[:, 0], g, H


def newton_batch(evaluate, theta0: np.ndarray, *, ftol_rel: float, max_evals: int | None = None):
    """Minimize B independent criteria from theta0 (B, k); returns theta, f, converged, evals.

    A problem that has used ``max_evals`` evaluations stops, not converged.
    """
    theta = np.array(theta0, dtype=float)
    B, k = theta.shape
    around = _Stencils(evaluate, k)
    npts = around.npts
    f, g, H = around(theta, np.arange(B))
    evals = np.full(B, npts, dtype=np.int64)
    converged = np.zeros(B, dtype=bool)
    active = _finite(f, g, H)
    for _ in range(MAX_ITER):
        if max_evals is not None:
            active &= evals < max_evals
        idx = np.flatnonzero(active)
        if idx.size == 0:
            break
        gi, fi = g[idx], f[idx]
        d = _direction(gi, H[idx])
        slope = np.einsum("bi,bi->b", gi, d)
        fscale = np.maximum(1.0, np.abs(fi))
        xscale = np.maximum(1.0, np.abs(theta[idx]).max(axis=1))
        done = (-0.5 * slope <= ftol_rel * fscale) | (np.abs(gi).max(axis=1) * xscale <= 1e-9 * fscale)
        if done.any():
            converged[idx[done]] = True
            active[idx[done]] = False
            keep = ~done
            idx, d, slope, fi = idx[keep], d[keep], slope[keep], fi[keep]
            if idx.size == 0:
                break
        # Speculative full step: the stencil at the trial point also tests it.
        trial = theta[idx] + d
        ft, gt, Ht = around(trial, idx)
        evals[idx] += npts
        ok = _finite(ft, gt, Ht) & (ft <= fi + _ARMIJO * slope)
        if ok.all():
            theta[idx], f[idx], g[idx], H[idx] = trial, ft, gt, Ht
            continue
        good = idx[ok]
        theta[good], f[good], g[good], H[good] = trial[ok], ft[ok], gt[ok], Ht[ok]
        bad = idx[~ok]
        moved = _backtrack(evaluate, theta, f, bad, d[~ok], slope[~ok], evals)
        if moved.size:
            f[moved], g[moved], H[moved] = around(theta[moved], moved)
            evals[moved] += npts
            active[moved[~_finite(f[moved], g[moved], H[moved])]] = False
        active[np.setdiff1d(bad, moved)] = False
    return theta, f, converged, evals


def _finite(f, g, H) -> np.ndarray:
    return np.isfinite(f + g.sum(axis=1) + H.sum(axis=(1, 2)))


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
