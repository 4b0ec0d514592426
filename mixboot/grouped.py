"""The profiled criterion of a small model for many (theta, response) points, by level groups.

:meth:`mixboot.workspace.Workspace.factorize` forms R P R' level by level for
every point.  But levels of the first term whose blocks A11_j are equal share
C_j and P_j (a balanced design: sleepstudy, penicillin, dyestuff have one such
group), so with G groups

    R P R' = sum_g sum_(s<=t) P_g[s, t] Q_g[s, t],   Q_g[s, t] = sum_(j in g) R_j[:, s] R_j[:, t]'
    (+ the transpose for s < t)

where Q's rows and columns of the tail (F = [Zr X]'Z1) are fixed and those of
the response are fixed per response.  Precomputed once per batch of responses,
a point then costs a few multiply-adds per entry of the small tail block S, and
its Cholesky factor is written out entry by entry over all points at once
(points along the last axis).  Every operation is elementwise over points with
reductions written as explicit sums in a fixed order, so a point's value never
depends on which other points share its call.

The arithmetic is the same as the workspace's up to the order of additions (the
two agree to rounding; tests hold them together).  :func:`grouped_evaluator`
returns None for a model outside its scope (the sparse path, many groups, a
wide tail), which then evaluates through the workspace.

With numba (:mod:`mixboot._compiled`) a point is evaluated by a compiled kernel,
bit for bit the numpy path's, and :meth:`GroupedCriterion.compiled_newton` runs
the whole of :func:`mixboot.newton.newton_batch` problem by problem in compiled
code: no Python between the evaluations of a refit.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from . import _compiled
from .workspace import Responses, Workspace, term1_blocks

__all__ = ["GroupedCriterion", "grouped_evaluator"]

_LOG2PI = np.log(2.0 * np.pi)
#: Largest tail width m written out entry by entry (the Cholesky is ~m^3/6 array operations).
MAX_M = 12
#: Most (group, block entry) pairs: a point's work is this times the entries of S.
MAX_K = 24
#: Points per array pass: temporaries of a pass stay in cache.
_POINTS = 2048


class GroupedCriterion:
    """The criterion of ``ws`` for the responses ``resp``, by groups of equal first-term blocks."""

    def __init__(self, ws: Workspace, resp: Responses, groups: np.ndarray):
        self.ws = ws
        m0, m, p1 = ws.m0, ws.m, ws.p1
        ng = int(groups.max()) + 1
        self.ng = ng
        order = np.argsort(groups, kind="stable")
        counts = np.bincount(groups, minlength=ng)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        self.counts = counts.astype(float)
        first = order[starts]
        self.A = ws.A11[first]  # (ng, p1, p1) the groups' blocks
        pairs = [(s, t) for s in range(p1) for t in range(s, p1)]
        self.pairs = pairs
        self.K = ng * len(pairs)
        F = ws.F[:, order]  # (m0, l1, p1), levels by group
        z = resp.z1y[:, order]  # (B, l1, p1)

        def gsum(x: np.ndarray) -> np.ndarray:  # sums over each group's levels (last axis)
            return np.add.reduceat(x, starts, axis=-1)

        # Q for the tail's lower triangle: (K, m0, m0); the response's row: (K, m, B)
        QF = np.zeros((ng, len(pairs), m0, m0))
        Qy = np.zeros((ng, len(pairs), m, resp.B))
        for u, (s, t) in enumerate(pairs):
            ff = F[:, None, :, s] * F[None, :, :, t]  # (m0, m0, l1)
            zf = z[:, None, :, s] * F[None, :, :, t]  # (B, m0, l1)
            zz = z[:, :, s] * z[:, :, t]  # (B, l1)
            if s != t:
                ff = ff + F[:, None, :, t] * F[None, :, :, s]
                zf = zf + z[:, None, :, t] * F[None, :, :, s]
                zz = zz + zz
            QF[:, u] = np.moveaxis(gsum(ff), -1, 0)
            Qy[:, u, :m0] = np.moveaxis(gsum(zf), -1, 0).transpose(0, 2, 1)
            Qy[:, u, m0] = gsum(zz).T
        self.QF = QF.reshape(self.K, m0, m0)
        self.Qy = np.ascontiguousarray(Qy.reshape(self.K, m, resp.B))
        self.taily = np.ascontiguousarray(resp.taily.T)  # (m0, B)
        self.yty = resp.yty
        self.rows, self.cols = np.tril_indices(m0)
        self.A22 = ws.A22[self.rows, self.cols]  # (nlow,)
        self.QFlow = self.QF[:, self.rows, self.cols]  # (K, nlow)
        # The compiled kernels cover 1- and 2-wide first terms and 1-wide rest terms.
        self.kernel = self.newton_kernel = None
        if p1 <= 2 and all(t.p == 1 for t in ws.rest):
            self.kernel = _compiled.grouped_objective()
            if self.kernel is not None:
                self.newton_kernel = _compiled.grouped_newton()
        sizes = [t.q for t in ws.rest]
        offs = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        tidx = np.array([sl.start for sl in ws.theta_slices[1:]], dtype=np.int64)
        # where the first term's lower triangle sits in theta (-1: a structural zero)
        sl0 = ws.theta_slices[0]
        probe = np.arange(1.0, sl0.stop - sl0.start + 1.0)[None, :]
        low = np.asarray(ws.t1.lower_triangle(probe) if p1 == 2 else probe)[0]
        t1map = np.where(low > 0, low - 1 + sl0.start, -1).astype(np.int64)
        self.data = (
            np.ascontiguousarray(self.A),
            self.counts,
            np.ascontiguousarray(self.QF),
            np.ascontiguousarray(ws.A22),
            self.Qy,
            self.taily,
            np.ascontiguousarray(self.yty),
            offs,
            tidx,
            t1map,
            int(ws.qr),
            bool(ws.REML),
            int(ws.n),
            int(ws.p),
        )

    # -- the first term, per group ---------------------------------------------
    def _first(self, th: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """sum_j log|C_j| (N,) and the groups' P entries (K, N) for theta (N, k1)."""
        ws, ng = self.ws, self.ng
        p1 = ws.p1
        if p1 == 1:
            tt = th[:, 0] * th[:, 0]
            a = self.A[:, 0, 0][:, None]
            c = tt * a + 1.0  # (ng, N)
            logc = np.log(c)
            P = tt / c
        elif p1 == 2:
            low = ws.t1.lower_triangle(th)
            t0, t1, t2 = low[:, 0], low[:, 1], low[:, 2]
            a00, a01, a11 = (self.A[:, i, j][:, None] for i, j in ((0, 0), (0, 1), (1, 1)))
            ta = t0 * a01 + t1 * a11
            c00 = t0 * (t0 * a00 + t1 * a01) + t1 * ta + 1.0
            c01 = t2 * ta
            c11 = (t2 * t2) * a11 + 1.0
            det = c00 * c11 - c01 * c01
            logc = np.log(det)
            i00, i01, i11 = c11 / det, -c01 / det, c00 / det
            P = np.empty((ng, 3, th.shape[0]))
            P[:, 0] = (t0 * t0) * i00
            P[:, 1] = t0 * (t1 * i00 + t2 * i01)
            P[:, 2] = t1 * (t1 * i00 + 2.0 * t2 * i01) + (t2 * t2) * i11
            P = P.reshape(self.K, -1)
        else:
            C, _, Pfull = term1_blocks(ws.t1, th, self.A[None])
            Lc = np.linalg.cholesky(C)  # (N, ng, p1, p1)
            d = np.diagonal(Lc, axis1=-2, axis2=-1)
            logc = 2.0 * np.log(d[..., 0]).T
            for i in range(1, p1):
                logc = logc + 2.0 * np.log(d[..., i]).T
            P = np.stack([Pfull[:, :, s, t] for s, t in self.pairs], axis=2)  # (N, ng, npair)
            P = P.reshape(P.shape[0], self.K).T
        logdet = self.counts[0] * logc[0]
        for g in range(1, ng):
            logdet = logdet + self.counts[g] * logc[g]
        return logdet, P

    # -- the criterion -----------------------------------------------------------
    def __call__(self, theta: np.ndarray, which: np.ndarray) -> np.ndarray:
        out = np.empty(theta.shape[0])
        if self.kernel is not None:
            self._compiled(out, theta, which)
            return out
        for start in range(0, theta.shape[0], _POINTS):
            sl = slice(start, start + _POINTS)
            with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                out[sl] = self._objective(theta[sl], which[sl])
        return out

    def _compiled(self, out: np.ndarray, theta: np.ndarray, which: np.ndarray) -> None:
        # writable C arrays: one compiled signature (a read-only array would add another)
        self.kernel(
            out,
            np.require(theta, float, ("C", "W")),
            np.require(which, np.int64, ("C", "W")),
            self.data,
        )

    def compiled_newton(
        self, theta0: np.ndarray, *, ftol_rel: float, max_evals: int | None, **constants
    ):
        """:func:`mixboot.newton.newton_batch` for problems 0..B-1, compiled; None without numba.

        ``constants``: fd_step, max_iter, max_step, armijo and chol_k, the Newton
        module's settings.  Returns theta, f, converged, evals and the final Hessians.
        """
        if self.newton_kernel is None:
            return None
        theta0 = np.require(theta0, float, ("C", "W"))
        B, k = theta0.shape
        theta, f = np.empty((B, k)), np.empty(B)
        conv, evals, H = (
            np.empty(B, dtype=np.bool_),
            np.empty(B, dtype=np.int64),
            np.empty((B, k, k)),
        )
        self.newton_kernel(
            theta0,
            float(ftol_rel),
            -1 if max_evals is None else int(max_evals),
            float(constants["fd_step"]),
            int(constants["max_iter"]),
            float(constants["max_step"]),
            float(constants["armijo"]),
            int(constants["chol_k"]),
            theta,
            f,
            conv,
            evals,
            H,
            self.data,
        )
        return theta, f, conv, evals, H

    def _objective(self, theta: np.ndarray, which: np.ndarray) -> np.ndarray:
        ws = self.ws
        m0, m, qr, N = ws.m0, ws.m, ws.qr, theta.shape[0]
        logdet, P = self._first(theta[:, ws.theta_slices[0]])
        # S's lower triangle, (m, m, N): T'T - R P R' with the response row
        S = np.zeros((m, m, N))
        low = self.A22[:, None] - self.QFlow[0][:, None] * P[0]
        for k in range(1, self.K):
            low -= self.QFlow[k][:, None] * P[k]
        S[self.rows, self.cols] = low
        Qy = self.Qy[:, :, which]  # (K, m, N)
        yrow = Qy[0] * P[0]
        for k in range(1, self.K):
            yrow += Qy[k] * P[k]
        S[m0, :m0] = self.taily[:, which] - yrow[:m0]
        S[m0, m0] = self.yty[which] - yrow[m0]
        self._scale_rest(S, theta)
        # Cholesky, column by column over all points; only log-diagonals are kept
        logd = np.empty((m, N))
        for j in range(m):
            piv = S[j, j]
            for i in range(j):
                piv = piv - S[j, i] * S[j, i]
            if j == m - 1:
                r2 = piv
                break
            dj = np.sqrt(piv)
            logd[j] = np.log(dj)
            below = S[j + 1 :, j]
            for i in range(j):
                below = below - S[j + 1 :, i] * S[j, i]
            S[j + 1 :, j] = below / dj
        for j in range(qr):
            logdet = logdet + 2.0 * logd[j]
        if ws.REML:
            dof = ws.n - ws.p
            for j in range(qr, m0):
                logdet = logdet + 2.0 * logd[j]
        else:
            dof = ws.n
        obj = logdet + dof * (1.0 + _LOG2PI + np.log(r2 / dof))
        return np.where(np.isfinite(obj), obj, np.inf)

    def _scale_rest(self, S: np.ndarray, theta: np.ndarray) -> None:
        """S <- Lt' S Lt on the lower triangle, then + 1 on the rest terms' diagonal."""
        ws = self.ws
        off = 0
        for term, sl in zip(ws.rest, ws.theta_slices[1:]):
            q, p = term.q, term.p
            T = term.factor(theta[:, sl])  # (N, p, p)
            if p == 1:
                s = T[:, 0, 0]
                # rows off..off+q (their entries left of the diagonal), then columns
                S[off : off + q, : off + q] *= s
                S[off:, off : off + q] *= s
            else:
                self._scale_block(S, T, off, term.nlevels, p)
            off += q
        for j in range(ws.qr):
            S[j, j] += 1.0

    @staticmethod
    def _scale_block(S: np.ndarray, T: np.ndarray, off: int, nlev: int, p: int) -> None:
        """Lt' S Lt for a p-wide term (levels off.., p each), via the full symmetric S."""
        m = S.shape[0]
        il, jl = np.tril_indices(m, -1)
        S[jl, il] = S[il, jl]
        Tt = np.moveaxis(T, 0, -1)  # (p, p, N)
        q = nlev * p
        rows = S[off : off + q].reshape(nlev, p, m, -1).copy()
        new = np.zeros_like(rows)
        for a in range(p):
            for s in range(a, p):  # T lower triangular: T[s, a] = 0 for s < a
                new[:, a] += Tt[s, a] * rows[:, s]
        S[off : off + q] = new.reshape(q, m, -1)
        cols = S[:, off : off + q].reshape(m, nlev, p, -1).copy()
        new = np.zeros_like(cols)
        for a in range(p):
            for s in range(a, p):
                new[:, :, a] += cols[:, :, s] * Tt[s, a]
        S[:, off : off + q] = new.reshape(m, q, -1)


def level_groups(ws: Workspace) -> tuple[np.ndarray, int]:
    """Group index (l1,) of each first-term level by its block A11_j, and the group count."""
    flat = ws.A11.reshape(ws.l1, -1)
    _, groups = np.unique(flat, axis=0, return_inverse=True)
    groups = groups.reshape(-1)
    return groups, int(groups.max()) + 1


def grouped_evaluator(
    ws: Workspace, resp: Responses
) -> Callable[[np.ndarray, np.ndarray], np.ndarray] | None:
    """``evaluate(theta (N, k), which (N,)) -> (N,)`` by level groups, or None when out of scope.

    In scope: a dense workspace whose tail is at most :data:`MAX_M` wide and whose
    first term's levels fall into few groups of equal blocks (:data:`MAX_K`).
    """
    if not ws.dense or ws.m > MAX_M or ws.F is None:
        return None
    groups, ng = level_groups(ws)
    if ng * ws.p1 * (ws.p1 + 1) // 2 > MAX_K:
        return None
    return GroupedCriterion(ws, resp, groups)
