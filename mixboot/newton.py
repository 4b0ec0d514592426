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
  callers then fall back to BOBYQA).  With ``finish`` (refits), once the predicted
  decrease is below 1e-6 of the criterion (``FINISH``), one last Newton step
  whose decrease a single evaluation confirms to 10% also ends the search.
"""

from __future__ import annotations

import numpy as np

__all__ = ["fd_derivatives", "newton_batch", "stencil", "zero_small_batch"]

FD_STEP = 1e-4
MAX_ITER = 60
MAX_STEP = 2.0
FINISH = 1e-6
_ARMIJO = 1e-4


def stencil(k: int) -> np.ndarray:
    """Offsets (in units of h): 0, +e_i, -e_i, e_i + e_j (i < j)."""
    rows = [np.zeros(k)]
    eye = np.eye(k)
    rows += list(eye) + list(-eye)
    rows += [eye[i] + eye[j] for i in range(k) for j in range(i + 1, k)]
    return np.array(rows)


def _difference_weights(k: int) -> np.ndarray:
    """W with fvals @ W = [2h * gradient, (h_i h_j) * Hessian (row-major)] for the stencil."""
    npts = 1 + 2 * k + k * (k - 1) // 2
    W = np.zeros((npts, k + k * k))
    for i in range(k):
        W[1 + i, i], W[1 + k + i, i] = 1.0, -1.0
        col = k + i * k + i
        W[0, col], W[1 + i, col], W[1 + k + i, col] = -2.0, 1.0, 1.0
    r = 1 + 2 * k
    for i in range(k):
        for j in range(i + 1, k):
            for col in (k + i * k + j, k + j * k + i):
                W[r, col], W[1 + i, col], W[1 + j, col], W[0, col] = 1.0, -1.0, -1.0, 1.0
            r += 1
    return W


def _direction(g: np.ndarray, H: np.ndarray) -> np.ndarray:
    w, V = np.linalg.eigh(H)
    w = np.abs(w)
    w = np.maximum(w, 1e-8 * np.maximum(w.max(axis=1, keepdims=True), 1e-12))
    d = -(V @ ((g[:, None, :] @ V)[:, 0, :] / w)[..., None])[..., 0]
    norm = np.abs(d).max(axis=1, keepdims=True)
    return d * np.minimum(1.0, MAX_STEP / np.maximum(norm, 1e-300))


class _Stencils:
    """Evaluates the stencil around a batch of points in one call; returns f, g, H."""

    def __init__(self, evaluate, k: int):
        self.evaluate = evaluate
        self.k = k
        self.offsets = stencil(k)
        self.npts = self.offsets.shape[0]
        self.weights = _difference_weights(k)

    def __call__(self, th: np.ndarray, idx: np.ndarray):
        k = self.k
        h = FD_STEP * np.maximum(1.0, np.abs(th))
        pts = (th[:, None, :] + self.offsets[None, :, :] * h[:, None, :]).reshape(-1, k)
        fv = self.evaluate(pts, np.repeat(idx, self.npts)).reshape(idx.size, self.npts)
        scale = np.concatenate(
            [2.0 * h, (h[:, :, None] * h[:, None, :]).reshape(-1, k * k)], axis=1
        )
        # One small product per problem (not one across problems, whose bits would
        # depend on how many problems share the call).
        d = np.matmul(fv[:, None, :], self.weights)[:, 0, :] / scale
        return fv[:, 0], d[:, :k], d[:, k:].reshape(-1, k, k)


def newton_batch(
    evaluate,
    theta0: np.ndarray,
    *,
    ftol_rel: float,
    max_evals: int | None = None,
    keep_sign: np.ndarray | None = None,
    finish: bool = False,
    hessian_out: np.ndarray | None = None,
):
    """Minimize B independent criteria from theta0 (B, k); returns theta, f, converged, evals.

    A problem that has used ``max_evals`` evaluations stops, not converged.
    ``keep_sign``: a mask of elements whose step may not carry them across zero
    (at most 90% of the way there).  Where the criterion is even in such an
    element, a step across zero only reaches the mirror image of a point, and a
    long Newton step can swing between the two for many iterations.
    ``finish``: end with the single-evaluation last step described in the module
    docstring (refits inside bootstraps and power analyses, where a replicate's
    Monte Carlo error dwarfs the difference).
    ``hessian_out`` (B, k, k), when given, receives each converged problem's Hessian
    at its final point (NaN where a last step moved it).
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
        if keep_sign is not None:
            x = theta[idx]
            limit = -0.9 * x
            cross = keep_sign[None, :] & (x != 0) & (np.abs(d) > np.abs(limit)) & (d * x < 0)
            d = np.where(cross, limit, d)
        slope = (gi * d).sum(axis=1)
        fscale = np.maximum(1.0, np.abs(fi))
        xscale = np.maximum(1.0, np.abs(theta[idx]).max(axis=1))
        done = (-0.5 * slope <= ftol_rel * fscale) | (
            np.abs(gi).max(axis=1) * xscale <= 1e-9 * fscale
        )
        # Near the optimum (predicted decrease below FINISH of the criterion) one more
        # Newton step, tested by a single evaluation, ends the search: its error is
        # second order in the current one, so the stencil around it would only confirm.
        near = ~done & (-0.5 * slope <= max(ftol_rel, min(np.sqrt(ftol_rel), FINISH)) * fscale)
        if finish and near.any():
            finish_now = near
            fidx = idx[finish_now]
            trial = theta[fidx] + d[finish_now]
            ft = evaluate(trial, fidx)
            evals[fidx] += 1
            # ...when the quadratic model predicted the decrease it gives (to 10%)
            predicted = -0.5 * slope[finish_now]
            ok = np.isfinite(ft) & (np.abs((fi[finish_now] - ft) - predicted) <= 0.1 * predicted)
            theta[fidx[ok]], f[fidx[ok]] = trial[ok], ft[ok]
            H[fidx[ok]] = np.nan
            done[np.flatnonzero(finish_now)[ok]] = True
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
    if hessian_out is not None:
        hessian_out[:] = np.where(converged[:, None, None], H, np.nan)
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


def zero_small_batch(evaluate, theta, lower, tol, f=None):
    """Bounded elements below ``tol`` go to exactly zero where that is no worse.

    ``f``: the criterion at ``theta`` where known (non-finite entries are
    evaluated).  Returns the new theta and its criterion.
    """
    theta = theta.copy()
    B = theta.shape[0]
    f = np.full(B, np.nan) if f is None else np.array(f, dtype=float)
    known = np.isfinite(f)
    for i in np.flatnonzero(lower == 0):
        rows = np.flatnonzero((theta[:, i] > 0) & (theta[:, i] < tol))
        if rows.size == 0:
            continue
        unknown = rows[~known[rows]]
        if unknown.size:
            f[unknown] = evaluate(theta[unknown], unknown)
            known[unknown] = True
        trial = theta[rows].copy()
        trial[:, i] = 0.0
        ft = evaluate(trial, rows)
        better = ft <= f[rows]
        theta[rows[better]] = trial[better]
        f[rows[better]] = ft[better]
    return theta, f


def fd_derivatives(evaluate, x: np.ndarray):
    """Criterion, gradient and Hessian by central finite differences at each row of x (B, k).

    The same stencil and steps as the Newton iterations; ``evaluate(points, which)``.
    """
    x = np.atleast_2d(np.asarray(x, dtype=float))
    return _Stencils(evaluate, x.shape[1])(x, np.arange(x.shape[0]))
