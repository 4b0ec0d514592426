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
* Directions come from a Cholesky factorization written out over the batch
  where the Hessian is safely positive definite, else from its eigenvalues.
* An ``evaluate`` with a ``compiled_newton`` method (the grouped criterion of
  :mod:`mixboot.grouped`, with numba) runs these same iterations problem by
  problem in compiled code (without ``keep_sign`` and ``finish`` only).
"""

from __future__ import annotations

import numpy as np

__all__ = ["fd_derivatives", "newton_batch", "stencil", "zero_small_batch"]

FD_STEP = 1e-4
MAX_ITER = 60
MAX_STEP = 2.0
FINISH = 1e-6
_ARMIJO = 1e-4
# Newton directions by a batched Cholesky up to this many parameters (eigh beyond).
_CHOLESKY_K = 8


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
    """The Newton direction with |eigenvalues| of H, capped in length, per problem.

    Where H is safely positive definite (the usual case) that is -H^-1 g, found by
    a Cholesky factorization written out over the batch (elementwise: a problem's
    bits do not depend on its batch mates); elsewhere by eigendecomposition.
    """
    B, k = g.shape
    d = np.empty((B, k))
    todo = np.ones(B, dtype=bool)
    if k <= _CHOLESKY_K:
        x, ok = _cholesky_solve(H, -g)
        d[ok] = x[ok]
        todo = ~ok
    if todo.any():
        d[todo] = _eigen_direction(g[todo], H[todo])
    norm = np.abs(d).max(axis=1, keepdims=True)
    return d * np.minimum(1.0, MAX_STEP / np.maximum(norm, 1e-300))


def _cholesky_solve(H: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """x = H^-1 b for each problem, and ok where every pivot is clearly positive.

    A pivot below 1e-10 of H's largest diagonal element (or not finite) marks the
    problem not ok: nearly singular or indefinite Hessians take the eigen path.
    """
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        return _cholesky_solve_unchecked(H, b)


def _cholesky_solve_unchecked(H: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    B, k = b.shape
    scale = np.abs(H[:, 0, 0])
    for i in range(1, k):
        scale = np.maximum(scale, np.abs(H[:, i, i]))
    L = np.zeros((B, k, k))
    ok = np.ones(B, dtype=bool)
    for j in range(k):
        piv = H[:, j, j]
        for i in range(j):
            piv = piv - L[:, j, i] * L[:, j, i]
        ok &= piv > 1e-10 * scale
        dj = np.sqrt(piv)
        L[:, j, j] = dj
        for r in range(j + 1, k):
            v = H[:, r, j]
            for i in range(j):
                v = v - L[:, r, i] * L[:, j, i]
            L[:, r, j] = v / dj
    y = np.empty((B, k))
    for i in range(k):
        v = b[:, i]
        for j in range(i):
            v = v - L[:, i, j] * y[:, j]
        y[:, i] = v / L[:, i, i]
    x = np.empty((B, k))
    for i in range(k - 1, -1, -1):
        v = y[:, i]
        for j in range(i + 1, k):
            v = v - L[:, j, i] * x[:, j]
        x[:, i] = v / L[:, i, i]
    ok &= np.isfinite(x).all(axis=1)
    return x, ok


def _eigen_direction(g: np.ndarray, H: np.ndarray) -> np.ndarray:
    w, V = np.linalg.eigh(H)
    w = np.abs(w)
    w = np.maximum(w, 1e-8 * np.maximum(w.max(axis=1, keepdims=True), 1e-12))
    return -(V @ ((g[:, None, :] @ V)[:, 0, :] / w)[..., None])[..., 0]


class _Stencils:
    """Evaluates the stencil around a batch of points in one call; returns f, g, H."""

    def __init__(self, evaluate, k: int):
        self.evaluate = evaluate
        self.k = k
        self.offsets = stencil(k)
        self.npts = self.offsets.shape[0]

    def __call__(self, th: np.ndarray, idx: np.ndarray):
        k = self.k
        h = FD_STEP * np.maximum(1.0, np.abs(th))
        pts = (th[:, None, :] + self.offsets[None, :, :] * h[:, None, :]).reshape(-1, k)
        fv = self.evaluate(pts, np.repeat(idx, self.npts)).reshape(idx.size, self.npts)
        return (fv[:, 0],) + _differences(fv, h)


def _differences(fv: np.ndarray, h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gradient and Hessian from the stencil values fv (B, npts) with steps h (B, k).

    The combinations of :func:`_difference_weights`, written out per problem (no
    product across problems, whose bits would depend on how many share the call).
    """
    B, k = h.shape
    f0 = fv[:, 0]
    fp, fm = fv[:, 1 : 1 + k], fv[:, 1 + k : 1 + 2 * k]
    g = (fp - fm) / (2.0 * h)
    H = np.empty((B, k, k))
    idx = np.arange(k)
    H[:, idx, idx] = ((-2.0 * f0)[:, None] + fp + fm) / (h * h)
    r = 1 + 2 * k
    for i in range(k):
        for j in range(i + 1, k):
            H[:, i, j] = H[:, j, i] = (((f0 - fp[:, i]) - fp[:, j]) + fv[:, r]) / (
                h[:, i] * h[:, j]
            )
            r += 1
    return g, H


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
    compiled = getattr(evaluate, "compiled_newton", None)
    if compiled is not None and keep_sign is None and not finish:
        # the same iterations, problem by problem in compiled code (mixboot.grouped)
        out = compiled(
            theta,
            ftol_rel=ftol_rel,
            max_evals=max_evals,
            fd_step=FD_STEP,
            max_iter=MAX_ITER,
            max_step=MAX_STEP,
            armijo=_ARMIJO,
            chol_k=_CHOLESKY_K,
        )
        if out is not None:
            theta, f, converged, evals, H = out
            if hessian_out is not None:
                hessian_out[:] = H
            return theta, f, converged, evals
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
