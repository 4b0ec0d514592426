"""Compiled kernels of :mod:`mixboot.grouped` (numba; imported only where numba is).

The criterion by level groups (:class:`mixboot.grouped.GroupedCriterion`) point by
point, and :func:`mixboot.newton.newton_batch` on it problem by problem, in the
numpy paths' order of operations: a point's value is bit for bit the numpy
path's, and so are Newton's iterates wherever the Hessian is positive definite
(elsewhere the two eigendecompositions may differ in rounding).

``data`` (a tuple): A, counts, QF, A22, Qy, taily, yty, offs, tidx, t1map, qr,
reml, n, p -- see :class:`mixboot.grouped.GroupedCriterion`.  Defined at module
level so that numba's on-disk cache finds them again in a new process.
"""

from __future__ import annotations

import math

import numba
import numpy as np

__all__ = ["newton", "objective"]

log2pi = math.log(2.0 * math.pi)


@numba.njit(cache=True, nogil=True)
def point(th, b, P, S, data):  # pragma: no cover - compiled
    A, counts, QF, A22, Qy, taily, yty, offs, tidx, t1map, qr, reml, n, p = data
    ng, p1 = A.shape[0], A.shape[1]
    K = QF.shape[0]
    m0 = QF.shape[1]
    m = m0 + 1
    logdet = 0.0
    if p1 == 1:
        tt = th[t1map[0]] * th[t1map[0]]
        for g in range(ng):
            c = tt * A[g, 0, 0] + 1.0
            lg = math.log(c) if c > 0.0 else (-math.inf if c == 0.0 else math.nan)
            logdet = counts[g] * lg if g == 0 else logdet + counts[g] * lg
            P[g] = tt / c
    else:
        t0 = th[t1map[0]] if t1map[0] >= 0 else 0.0
        t1 = th[t1map[1]] if t1map[1] >= 0 else 0.0
        t2 = th[t1map[2]] if t1map[2] >= 0 else 0.0
        for g in range(ng):
            a00, a01, a11 = A[g, 0, 0], A[g, 0, 1], A[g, 1, 1]
            ta = t0 * a01 + t1 * a11
            c00 = t0 * (t0 * a00 + t1 * a01) + t1 * ta + 1.0
            c01 = t2 * ta
            c11 = (t2 * t2) * a11 + 1.0
            det = c00 * c11 - c01 * c01
            lg = math.log(det) if det > 0.0 else (-math.inf if det == 0.0 else math.nan)
            logdet = counts[g] * lg if g == 0 else logdet + counts[g] * lg
            i00, i01, i11 = c11 / det, -c01 / det, c00 / det
            P[3 * g] = (t0 * t0) * i00
            P[3 * g + 1] = t0 * (t1 * i00 + t2 * i01)
            P[3 * g + 2] = t1 * (t1 * i00 + 2.0 * t2 * i01) + (t2 * t2) * i11
    for a in range(m0):
        for c in range(a + 1):
            s = A22[a, c] - QF[0, a, c] * P[0]
            for k in range(1, K):
                s -= QF[k, a, c] * P[k]
            S[a, c] = s
    for c in range(m):
        acc = Qy[0, c, b] * P[0]
        for k in range(1, K):
            acc += Qy[k, c, b] * P[k]
        S[m0, c] = (taily[c, b] if c < m0 else yty[b]) - acc
    for t in range(tidx.shape[0]):
        lo = offs[t]
        hi = offs[t + 1]
        s = th[tidx[t]]
        for a in range(lo, hi):
            for c in range(a + 1):
                S[a, c] *= s
        for a in range(lo, m):
            for c in range(lo, min(hi, a + 1)):
                S[a, c] *= s
    for j in range(qr):
        S[j, j] += 1.0
    r2 = 0.0
    for j in range(m):
        piv = S[j, j]
        for k in range(j):
            piv = piv - S[j, k] * S[j, k]
        if j == m - 1:
            r2 = piv
            break
        if not piv > 0.0:
            return math.inf
        dj = math.sqrt(piv)
        if j < qr or reml:
            logdet = logdet + 2.0 * math.log(dj)
        for r in range(j + 1, m):
            v = S[r, j]
            for k in range(j):
                v = v - S[r, k] * S[j, k]
            S[r, j] = v / dj
    dof = n - p if reml else n
    if not r2 > 0.0:
        return math.inf
    obj = logdet + dof * (1.0 + log2pi + math.log(r2 / dof))
    return obj if math.isfinite(obj) else math.inf


@numba.njit(cache=True, nogil=True)
def objective(out, theta, which, data):  # pragma: no cover - compiled
    K = data[2].shape[0]
    m = data[2].shape[1] + 1
    P = np.empty(K)
    S = np.empty((m, m))
    for i in range(out.shape[0]):
        out[i] = point(theta[i], which[i], P, S, data)


@numba.njit(cache=True, nogil=True)
def stencil(th, b, h, pt, fv, g, H, P, S, data):  # pragma: no cover - compiled
    # f, g and H by the finite differences of mixboot.newton (same points, same sums)
    k = th.shape[0]
    pt[:] = th
    fv[0] = point(pt, b, P, S, data)
    for i in range(k):
        pt[i] = th[i] + h[i]
        fv[1 + i] = point(pt, b, P, S, data)
        pt[i] = th[i] - h[i]
        fv[1 + k + i] = point(pt, b, P, S, data)
        pt[i] = th[i]
    r = 1 + 2 * k
    for i in range(k):
        for j in range(i + 1, k):
            pt[i] = th[i] + h[i]
            pt[j] = th[j] + h[j]
            fv[r] = point(pt, b, P, S, data)
            pt[i] = th[i]
            pt[j] = th[j]
            r += 1
    f0 = fv[0]
    total = f0
    for i in range(k):
        g[i] = (fv[1 + i] - fv[1 + k + i]) / (2.0 * h[i])
        H[i, i] = ((-2.0 * f0) + fv[1 + i] + fv[1 + k + i]) / (h[i] * h[i])
    r = 1 + 2 * k
    for i in range(k):
        for j in range(i + 1, k):
            v = (((f0 - fv[1 + i]) - fv[1 + j]) + fv[r]) / (h[i] * h[j])
            H[i, j] = v
            H[j, i] = v
            r += 1
    for i in range(k):
        total += g[i]
        for j in range(k):
            total += H[i, j]
    return f0, math.isfinite(total)


@numba.njit(cache=True, nogil=True)
def direction(g, H, d, L, y, chol_k, max_step):  # pragma: no cover - compiled
    k = g.shape[0]
    ok = k <= chol_k
    if ok:
        scale = abs(H[0, 0])
        for i in range(1, k):
            scale = max(scale, abs(H[i, i]))
        for j in range(k):
            piv = H[j, j]
            for i in range(j):
                piv = piv - L[j, i] * L[j, i]
            if not piv > 1e-10 * scale:
                ok = False
                break
            dj = math.sqrt(piv)
            L[j, j] = dj
            for r in range(j + 1, k):
                v = H[r, j]
                for i in range(j):
                    v = v - L[r, i] * L[j, i]
                L[r, j] = v / dj
    if ok:
        for i in range(k):
            v = -g[i]
            for j in range(i):
                v = v - L[i, j] * y[j]
            y[i] = v / L[i, i]
        for i in range(k - 1, -1, -1):
            v = y[i]
            for j in range(i + 1, k):
                v = v - L[j, i] * d[j]
            d[i] = v / L[i, i]
        for i in range(k):
            if not math.isfinite(d[i]):
                ok = False
    if not ok:
        w, V = np.linalg.eigh(H)
        wmax = 0.0
        for i in range(k):
            w[i] = abs(w[i])
            wmax = max(wmax, w[i])
        floor = 1e-8 * max(wmax, 1e-12)
        for j in range(k):
            c = 0.0
            for i in range(k):
                c += g[i] * V[i, j]
            y[j] = c / max(w[j], floor)
        for i in range(k):
            c = 0.0
            for j in range(k):
                c += V[i, j] * y[j]
            d[i] = -c
    norm = 0.0
    for i in range(k):
        norm = max(norm, abs(d[i]))
    shrink = min(1.0, max_step / max(norm, 1e-300))
    for i in range(k):
        d[i] = d[i] * shrink


@numba.njit(cache=True, nogil=True)
def newton(  # pragma: no cover - compiled
    theta0,
    ftol,
    max_evals,
    fd_step,
    max_iter,
    max_step,
    armijo,
    chol_k,
    theta_out,
    f_out,
    conv_out,
    evals_out,
    H_out,
    data,
):
    # mixboot.newton.newton_batch (without keep_sign and finish), problem by problem
    B, k = theta0.shape
    npts = 1 + 2 * k + k * (k - 1) // 2
    K = data[2].shape[0]
    m = data[2].shape[1] + 1
    P = np.empty(K)
    S = np.empty((m, m))
    th, trial, pt, h, d = np.empty(k), np.empty(k), np.empty(k), np.empty(k), np.empty(k)
    fv = np.empty(npts)
    g, gt, y = np.empty(k), np.empty(k), np.empty(k)
    H, Ht, L = np.empty((k, k)), np.empty((k, k)), np.empty((k, k))
    for b in range(B):
        for i in range(k):
            th[i] = theta0[b, i]
            h[i] = fd_step * max(1.0, abs(th[i]))
        f, active = stencil(th, b, h, pt, fv, g, H, P, S, data)
        evals = npts
        conv = False
        for _ in range(max_iter):
            if max_evals >= 0 and evals >= max_evals:
                active = False
            if not active:
                break
            direction(g, H, d, L, y, chol_k, max_step)
            slope = 0.0
            gmax = 0.0
            xmax = 0.0
            for i in range(k):
                slope += g[i] * d[i]
                gmax = max(gmax, abs(g[i]))
                xmax = max(xmax, abs(th[i]))
            fscale = max(1.0, abs(f))
            if -0.5 * slope <= ftol * fscale or gmax * max(1.0, xmax) <= 1e-9 * fscale:
                conv = True
                break
            for i in range(k):
                trial[i] = th[i] + d[i]
                h[i] = fd_step * max(1.0, abs(trial[i]))
            ft, fin = stencil(trial, b, h, pt, fv, gt, Ht, P, S, data)
            evals += npts
            if fin and ft <= f + armijo * slope:
                th[:] = trial
                f = ft
                g[:] = gt
                H[:, :] = Ht
                continue
            alpha = 0.25
            moved = False
            for _ in range(11):
                for i in range(k):
                    trial[i] = th[i] + alpha * d[i]
                ft = point(trial, b, P, S, data)
                evals += 1
                if math.isfinite(ft) and ft <= f + armijo * alpha * slope:
                    th[:] = trial
                    f = ft
                    moved = True
                    break
                alpha *= 0.25
            if not moved:
                active = False
                continue
            for i in range(k):
                h[i] = fd_step * max(1.0, abs(th[i]))
            f, active = stencil(th, b, h, pt, fv, g, H, P, S, data)
            evals += npts
        theta_out[b] = th
        f_out[b] = f
        conv_out[b] = conv
        evals_out[b] = evals
        for i in range(k):
            for j in range(k):
                H_out[b, i, j] = H[i, j] if conv else math.nan
