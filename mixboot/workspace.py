"""The numeric workspace of a linear mixed model, and its profiled deviance.

Notation (lme4 / MixedModels.jl): y = X beta + Z Lambda u + e, u ~ N(0, s^2 I).
Terms are ordered by number of levels, most first.  The first term's block of
Z'Z is block diagonal (l1 blocks of p1 x p1); everything else -- the other
terms' columns, X and y -- forms the "tail" T = [Zr X y] of width m.  For a
given theta the blocked Cholesky factor of

    [[L1'Z1'Z1 L1 + I,  L1'Z1'T Lt], [Lt'T'Z1 L1,  Lt'T'T Lt + Ir]]

is found in two steps: per level j, C_j = T1' A11_j T1 + I; then the tail block

    S = Lt' (T'T - R P R') Lt + Ir,   R = T'Z1,  P = blockdiag(T1 C_j^-1 T1'),

whose dense Cholesky L holds everything else: log|L_Z|^2 = sum log|C_j| +
2 sum log diag L[:qr]; the penalized residual sum of squares is L[-1, -1]^2;
and for REML log|L_X|^2 = 2 sum log diag L[X].  Only R's last row (Z1'y) and
T'T's last row and column (Zr'y, X'y, y'y) depend on y, which is what makes a
refit for a new response cheap: see :class:`Responses`.

The kernel is written over a batch of (theta, response) pairs so that a
bootstrap evaluates many replicates in one pass; a single fit is a batch of one.
When R is too large to hold densely per pair (InstEval: 1158 x 2972) the
single-theta path computes R P R' with scipy.sparse and builds and factors the
tail in place, lower triangle only (:mod:`mixboot.tail`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg
import scipy.sparse as sp

from .blocks import amalgamate, block_slices, split_blocks
from .spec import ModelSpec, z_from_terms, zt_columns
from .tail import LeanTail, pair_entries, tail_kind

__all__ = ["Workspace", "Responses", "Factorization", "term1_blocks", "scale_tail", "tail_block"]

_LOG2PI = np.log(2.0 * np.pi)
# Above this many entries of R per (theta, response) pair, use the sparse single path.
_DENSE_LIMIT = 400_000


@dataclass(frozen=True)
class Responses:
    """The y-dependent cross-products of B responses: all a refit needs of y."""

    z1y: np.ndarray  # (B, l1, p1)   Z1'y by level
    taily: np.ndarray  # (B, m0)       [Zr X]'y
    yty: np.ndarray  # (B,)

    @property
    def B(self) -> int:
        return self.yty.shape[0]

    def take(self, index: np.ndarray) -> Responses:
        return Responses(self.z1y[index], self.taily[index], self.yty[index])


@dataclass(frozen=True)
class Factorization:
    """The result of evaluating the profiled deviance for a batch."""

    objective: np.ndarray  # (B,)
    # (B, m, m) Cholesky factor of the tail block S.  Single-theta path: only the lower
    # triangle is meaningful, except that the trailing [X y] block is clean (tail.py).
    L: np.ndarray
    C: np.ndarray  # (B, l1, p1, p1) per-level C_j
    ok: np.ndarray  # (B,) False where S was not positive definite


class Workspace:
    """Cross-products of Z, X (and y) for one model, built once."""

    def __init__(self, spec: ModelSpec, *, REML: bool):
        self.spec = spec
        self.REML = bool(REML)
        # terms on one factor as one block (theta and user-visible output per term)
        self.blocks = amalgamate(spec.terms)
        self.t1, self.rest = self.blocks[0], self.blocks[1:]
        t1 = self.t1
        self.n, self.p = spec.n, spec.p
        self.l1, self.p1 = t1.nlevels, t1.p
        self.q1 = t1.q
        self.qr = sum(t.q for t in self.rest)
        self.m0 = self.qr + self.p
        self.m = self.m0 + 1
        Z = z_from_terms(self.blocks, spec.n)  # columns level-major within a block
        self.Z = Z
        self.Zt = Z.T.tocsr()
        self.Xt = np.ascontiguousarray(spec.X.T)
        self.A11 = self._blockdiag_crossprod(t1)
        self.dense = self.m * self.q1 <= _DENSE_LIMIT
        XZ1 = np.asarray(self.Zt[: self.q1] @ spec.X).T  # (p, q1)
        Zr = None
        if self.qr == 0:
            # One term: no sparse products beyond Z itself.
            self.F_sparse = sp.csr_matrix(XZ1)
            self.F = XZ1.reshape(self.m0, self.l1, self.p1) if self.dense else None
        else:
            Z1 = Z[:, : self.q1]
            Zr = Z[:, self.q1 :]
            Zr1 = (Zr.T @ Z1).tocsr()
            self.F_sparse = sp.vstack([Zr1, sp.csr_matrix(XZ1)], format="csr")
            self.F = (
                self.F_sparse.toarray().reshape(self.m0, self.l1, self.p1) if self.dense else None
            )
        # The single-theta path keeps A22 sparse (a wide tail is mostly diagonal) and
        # refuses a tail too wide for memory up front (mixboot.tail.tail_kind).
        self.A22 = _tail_crossprod(Zr, spec.X, dense=self.dense)
        self.K = None
        self.tail_kind = "batched" if self.dense else tail_kind(self.m)
        self._single: LeanTail | None = None
        self.theta_slices = block_slices(self.blocks)
        self.n_theta = spec.n_theta
        self.response = self.responses(spec.y[:, None])

    @property
    def bytes_per_replicate(self) -> int | None:
        """Working memory of one replicate in a batched refit (None: the sparse path,
        which refits one replicate at a time)."""
        if not self.dense:
            return None
        return 8 * (self.n * 3 + self.m * self.m * 12 + self.m * self.q1 * 10)

    def _blockdiag_crossprod(self, term) -> np.ndarray:
        A = np.empty((term.nlevels, term.p, term.p))
        for a in range(term.p):
            for b in range(a, term.p):
                A[:, a, b] = np.bincount(
                    term.codes, weights=term.zraw[:, a] * term.zraw[:, b], minlength=term.nlevels
                )
                A[:, b, a] = A[:, a, b]
        return A

    # -- the y-dependent part -------------------------------------------------
    def responses(self, Y: np.ndarray) -> Responses:
        """Cross-products of the columns of Y (n x B), each column on its own.

        A BLAS matrix product over all B columns at once gives bits that depend
        on B (the kernel blocks the columns differently for each width).  Here
        Z'Y adds rows in order (:func:`mixboot.spec.zt_columns`), X'y is one
        matrix-vector product per column, and y'y a sum per column, so a
        replicate's cross-products never depend on its batch mates.
        """
        Y = np.asarray(Y, dtype=float)
        if Y.ndim == 1:
            Y = Y[:, None]
        Yt = np.ascontiguousarray(Y.T)  # (B, n), a row per response
        ZtY = zt_columns(self.blocks, Y)
        XtY = np.matmul(self.Xt, Yt[:, :, None])[:, :, 0]
        yty = (Yt * Yt).sum(axis=1)
        z1y = ZtY[:, : self.q1].reshape(-1, self.l1, self.p1)
        taily = np.concatenate([ZtY[:, self.q1 :], XtY], axis=1)
        return Responses(np.ascontiguousarray(z1y), taily, yty)

    # -- theta -> factor pieces -------------------------------------------------
    def _term1(self, theta: np.ndarray):
        return term1_blocks(self.t1, theta[:, self.theta_slices[0]], self.A11[None])

    def _scale_tail(self, S: np.ndarray, theta: np.ndarray) -> None:
        scale_tail(S, theta, self.rest, self.theta_slices[1:], self.qr)

    def _tail_dense(self, P: np.ndarray, resp: Responses) -> np.ndarray:
        return tail_block(self.F, self.A22, P, resp)

    def _factor_single(
        self, theta: np.ndarray, P: np.ndarray, resp: Responses
    ) -> tuple[np.ndarray, np.ndarray]:
        """(L (1, m, m), ok (1,)) for one theta and response on the single-theta path."""
        if resp.B != 1 or P.shape[0] != 1:
            raise ValueError("the sparse path evaluates one theta and one response at a time")
        if self._single is None:
            self._single = LeanTail(
                self.F_sparse, self.A22, self.l1, self.p1, self.rest, self.theta_slices[1:], self.qr
            )
        L, ok = self._single.factor(theta[0], P[0], resp.z1y[0], resp.taily[0], float(resp.yty[0]))
        return L[None], np.array([ok])

    # -- the objective ----------------------------------------------------------
    def factorize(self, theta: np.ndarray, resp: Responses | None = None) -> Factorization:
        """Evaluate the profiled deviance (or REML criterion) for a batch.

        theta: (B, n_theta); resp: B responses (default: the model's own y,
        broadcast).  Changes nothing in the workspace.
        """
        theta = np.atleast_2d(np.asarray(theta, dtype=float))
        B = theta.shape[0]
        if resp is None:
            resp = self.response
        if resp.B != B:
            resp = resp.take(np.zeros(B, dtype=np.int64)) if resp.B == 1 else None
            if resp is None:
                raise ValueError("need one response per theta (or a single response)")
        C, logdet1, P = self._term1(theta)
        if self.dense:
            S = self._tail_dense(P, resp)
            self._scale_tail(S, theta)
            L, ok = _batched_cholesky(S)
        else:
            L, ok = self._factor_single(theta, P, resp)
        d = np.diagonal(L, axis1=-2, axis2=-1)
        with np.errstate(divide="ignore", invalid="ignore"):
            logd = np.log(d)
            logdet = logdet1 + 2.0 * logd[:, : self.qr].sum(axis=1)
            r2 = d[:, -1] ** 2
            if self.REML:
                dof = self.n - self.p
                obj = (
                    logdet
                    + 2.0 * logd[:, self.qr : self.m0].sum(axis=1)
                    + dof * (1.0 + _LOG2PI + np.log(r2 / dof))
                )
            else:
                obj = logdet + self.n * (1.0 + _LOG2PI + np.log(r2 / self.n))
        obj = np.where(ok & np.isfinite(obj), obj, np.inf)
        return Factorization(objective=obj, L=L, C=C, ok=ok)

    def objective(self, theta: np.ndarray) -> float:
        """The criterion at one theta for the model's own response."""
        return float(self.factorize(np.asarray(theta, dtype=float)[None, :]).objective[0])

    # -- estimates from a factorization ----------------------------------------
    def fixef_sigma(self, fac: Factorization) -> tuple[np.ndarray, np.ndarray]:
        """beta (B, p) and sigma (B,) from a batch factorization."""
        L = fac.L
        LXX = L[:, self.qr : self.m0, self.qr : self.m0]
        cX = L[:, self.m0, self.qr : self.m0]
        beta = _solve_upper_batched(np.swapaxes(LXX, -1, -2), cX)
        r2 = L[:, -1, -1] ** 2
        dof = self.n - self.p if self.REML else self.n
        return beta, np.sqrt(r2 / dof)

    def conditional_modes(
        self, theta: np.ndarray, fac: Factorization, resp: Responses, beta: np.ndarray
    ) -> list[np.ndarray]:
        """Spherical modes u per term for ONE (theta, response): list of (l_k, p_k).

        One array per term of ``spec.terms`` (a block's columns split back).
        """
        L = fac.L[0]
        Lrr = L[: self.qr, : self.qr]
        crest = L[self.m0, : self.qr] - L[self.qr : self.m0, : self.qr].T @ beta
        ur = (
            scipy.linalg.solve_triangular(Lrr.T, crest, lower=False, check_finite=False)
            if self.qr
            else np.zeros(0)
        )
        b_rest, off, out_rest = [], 0, []
        for term, sl in zip(self.rest, self.theta_slices[1:]):
            u = ur[off : off + term.q].reshape(term.nlevels, term.p)
            out_rest.append(u)
            b_rest.append((u @ term.factor(theta[sl]).T).reshape(-1))
            off += term.q
        w = np.concatenate(b_rest + [beta])
        Fw = (self.F_sparse.T @ w if self.F is None else w @ self.F.reshape(self.m0, -1)).reshape(
            self.l1, self.p1
        )
        T1 = self.t1.factor(theta[self.theta_slices[0]])
        rhs = (resp.z1y[0] - Fw) @ T1  # T1' (z1y_j - (F'w)_j)
        u1 = np.linalg.solve(fac.C[0], rhs[..., None])[..., 0]
        return split_blocks(self.blocks, [u1] + out_rest)

    def vcov_unscaled(self, fac: Factorization) -> np.ndarray:
        """(L_X L_X')^-1 for ONE factorization: vcov(beta) / sigma^2."""
        return self.vcov_unscaled_batch(fac)[0]

    def vcov_unscaled_batch(self, fac: Factorization) -> np.ndarray:
        """(L_X L_X')^-1 for each factorization of a batch: (B, p, p); NaN where it failed."""
        LXX = fac.L[:, self.qr : self.m0, self.qr : self.m0]
        ok = np.isfinite(LXX).all(axis=(-2, -1)) & (
            np.abs(np.diagonal(LXX, axis1=1, axis2=2)) > 0
        ).all(axis=-1)
        inv = np.linalg.inv(np.where(ok[:, None, None], LXX, np.eye(self.p)))
        out = np.swapaxes(inv, -1, -2) @ inv
        out[~ok] = np.nan
        return out


def term1_blocks(t1, th: np.ndarray, A11: np.ndarray):
    """C_j = T1' A11_j T1 + I, sum_j log|C_j| and P_j = T1 C_j^-1 T1' for a batch of theta.

    ``th``: (B, n_theta of the first term); ``A11``: (1 or B, l1, p1, p1), the
    first term's block-diagonal cross-product (weighted per problem for a GLMM).
    """
    p1 = t1.p
    if p1 == 2:
        return _term1_pairs(t1.lower_triangle(th), A11)
    T1 = t1.factor(th)  # (B, p1, p1)
    if p1 == 1:
        t2 = T1[:, 0, 0] ** 2
        c = t2[:, None] * A11[:, :, 0, 0] + 1.0  # (B, l1)
        logdet = np.log(c).sum(axis=1)
        P = (t2[:, None] / c)[:, :, None, None]
        C = c[:, :, None, None]
        return C, logdet, P
    T1t = np.swapaxes(T1, -1, -2)[:, None]
    C = small_matmul(small_matmul(T1t, A11), T1[:, None])
    C[..., np.arange(p1), np.arange(p1)] += 1.0
    Lc = np.linalg.cholesky(C)
    logdet = 2.0 * np.log(np.diagonal(Lc, axis1=-2, axis2=-1)).sum(axis=(1, 2))
    # P = T1 C^-1 T1' = W'W with W = Lc^-1 T1'
    W = np.linalg.solve(Lc, np.broadcast_to(np.swapaxes(T1, -1, -2)[:, None], C.shape))
    P = np.swapaxes(W, -1, -2) @ W
    return C, logdet, P


def _term1_pairs(th: np.ndarray, A: np.ndarray):
    """term1_blocks for 2-wide blocks in closed form: T = [[t0, 0], [t1, t2]] per theta.

    C = T' A T + I and P = T C^-1 T', written out element by element: a few
    dozen vectorized operations on (B, l1) arrays instead of 4-d products.
    """
    t0, t1, t2 = th[:, 0:1], th[:, 1:2], th[:, 2:3]
    a00, a01, a11 = A[:, :, 0, 0], A[:, :, 0, 1], A[:, :, 1, 1]
    ta = t0 * a01 + t1 * a11  # (A T)[1, 0] / row mix
    c00 = t0 * (t0 * a00 + t1 * a01) + t1 * ta + 1.0
    c01 = t2 * ta
    c11 = (t2 * t2) * a11 + 1.0
    det = c00 * c11 - c01 * c01
    i00, i01, i11 = c11 / det, -c01 / det, c00 / det
    B, l1 = det.shape
    C = np.empty((B, l1, 2, 2))
    C[..., 0, 0], C[..., 1, 1] = c00, c11
    C[..., 0, 1] = C[..., 1, 0] = c01
    P = np.empty((B, l1, 2, 2))
    P[..., 0, 0] = (t0 * t0) * i00
    P[..., 0, 1] = P[..., 1, 0] = t0 * (t1 * i00 + t2 * i01)
    P[..., 1, 1] = t1 * (t1 * i00 + 2.0 * t2 * i01) + (t2 * t2) * i11
    return C, np.log(det).sum(axis=1), P


def scale_tail(S: np.ndarray, theta: np.ndarray, rest, slices, qr: int) -> None:
    """S <- Lt' S Lt in place, Lt = blockdiag(Lambda_rest, I), then + I on the rest's diagonal."""
    B = S.shape[0]
    off = 0
    for term, sl in zip(rest, slices):
        q, p, lk = term.q, term.p, term.nlevels
        T = term.factor(theta[:, sl])
        if p == 1:
            s = T[:, 0, 0]
            S[:, off : off + q, :] *= s[:, None, None]
            S[:, :, off : off + q] *= s[:, None, None]
        else:
            rows = S[:, off : off + q, :].reshape(B, lk, p, -1)
            Tt = np.swapaxes(T, -1, -2)[:, None]
            S[:, off : off + q, :] = small_matmul(Tt, rows).reshape(B, q, -1)
            cols = S[:, :, off : off + q].reshape(B, -1, lk, p)
            S[:, :, off : off + q] = small_matmul(cols, T[:, None]).reshape(B, -1, q)
        off += q
    idx = np.arange(qr)
    S[:, idx, idx] += 1.0


def tail_block(F: np.ndarray, A22: np.ndarray, P: np.ndarray, resp: Responses) -> np.ndarray:
    """The tail [T'T - R P R'] with the response row and column appended, per problem.

    ``F``: (m0, l1, p1) or (B, m0, l1, p1), the tail's cross-product with the first
    term; ``A22``: (m0, m0) or (B, m0, m0); ``resp``: B responses.
    """
    B = P.shape[0]
    m0, l1, p1 = F.shape[-3:]
    m = m0 + 1
    R = np.empty((B, m, l1, p1))
    R[:, :m0] = F
    R[:, m0] = resp.z1y
    if p1 == 1:
        G = R * P[:, None, :, 0, 0, None]
    else:
        G = small_matmul(R[..., None, :], P[:, None])[..., 0, :]
    M = G.reshape(B, m, l1 * p1) @ R.reshape(B, m, l1 * p1).transpose(0, 2, 1)
    S = -M
    S[:, :m0, :m0] += A22
    S[:, :m0, m0] += resp.taily
    S[:, m0, :m0] += resp.taily
    S[:, m0, m0] += resp.yty
    return S


def small_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b over the last two axes, broadcasting; unrolled over a short inner axis.

    For the 1-4 wide blocks of random-effect terms, a few vectorized
    multiply-adds over the whole batch beat numpy's per-matrix matmul loop.
    """
    r = a.shape[-1]
    if r > 4:
        return a @ b
    out = a[..., :, 0:1] * b[..., 0:1, :]
    for k in range(1, r):
        out = out + a[..., :, k : k + 1] * b[..., k : k + 1, :]
    return out


def _batched_cholesky(S: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cholesky of each matrix in S; a matrix that is not positive definite gets ok=False."""
    try:
        return np.linalg.cholesky(S), np.ones(S.shape[0], dtype=bool)
    except np.linalg.LinAlgError:
        L = np.full_like(S, np.nan)
        ok = np.zeros(S.shape[0], dtype=bool)
        for b in range(S.shape[0]):
            try:
                L[b] = np.linalg.cholesky(S[b])
                ok[b] = True
            except np.linalg.LinAlgError:
                pass
        return L, ok


def _pair_products(F: sp.csr_matrix, l1: int, p1: int) -> sp.csr_matrix:
    """K with vec(F blockdiag(P_j) F')[lower] = K vec(P), as one (m0 * m0, l1 p1 p1) matrix.

    Row r*m0 + r2 (r >= r2) of K, column (j, s, t), holds F[r, (j,s)] * F[r2, (j,t)].
    A reference for :func:`mixboot.tail.pair_entries`, which the single-theta path
    uses compressed to the pattern's rows (:class:`mixboot.tail.LeanTail`).
    """
    m0 = F.shape[0]
    row, col, pcol, val = pair_entries(F, l1, p1)
    return sp.csr_matrix((val, (row * m0 + col, pcol)), shape=(m0 * m0, l1 * p1 * p1))


def _tail_crossprod(Zr, X: np.ndarray, *, dense: bool):
    """A22 = [Zr X]'[Zr X]: dense (m0, m0) for the batched path, sparse for the single one."""
    XtX = X.T @ X
    if Zr is None:
        return XtX if dense else sp.csr_matrix(XtX)
    ZrZr = Zr.T @ Zr
    ZrX = np.asarray(Zr.T @ X)
    if not dense:
        return sp.bmat([[ZrZr, sp.csr_matrix(ZrX)], [sp.csr_matrix(ZrX.T), sp.csr_matrix(XtX)]])
    qr = ZrZr.shape[0]
    A22 = np.empty((qr + X.shape[1],) * 2)
    A22[qr:, qr:] = XtX
    A22[:qr, :qr] = ZrZr.toarray()
    A22[:qr, qr:] = ZrX
    A22[qr:, :qr] = ZrX.T
    return A22


def _solve_upper_batched(U: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Solve U x = c for a batch of small upper-triangular U by back-substitution."""
    p = U.shape[-1]
    x = np.zeros(c.shape)
    for i in range(p - 1, -1, -1):
        x[:, i] = (c[:, i] - (U[:, i, i + 1 :] * x[:, i + 1 :]).sum(axis=1)) / U[:, i, i]
    return x
