"""The numeric workspace of a linear mixed model, and its profiled deviance.

Notation (lme4 / MixedModels.jl): y = X beta + Z Lambda u + e, u ~ N(0, s^2 I).
Terms are ordered by number of levels, most first, and the terms on one grouping
factor are merged into one block (:mod:`mixboot.blocks`; lme4's theta order is
kept).  The first block of Z'Z is block diagonal (l1 blocks of p1 x p1);
everything else -- the other blocks' columns, X and y -- forms the "tail"
T = [Zr X y] of width m.  For a
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
tail in place, lower triangle only (:mod:`mixboot.tail`); a tail too wide for a
dense buffer has its random-effect block factored by CHOLMOD instead
(:class:`mixboot.tail.SparseTail`, ``tail_kind == "sparse"``), and the
factorization's ``L`` is then only the trailing [X y] block of the factor.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

import numpy as np
import scipy.linalg
import scipy.sparse as sp

from .blocks import amalgamate, block_slices, split_blocks
from .spec import ModelSpec, z_from_terms, zt_columns
from .tail import LeanTail, SparseFactor, SparseTail, pair_entries, tail_kind

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
    # Sparse tail (``rr`` set): only the trailing (1, p + 1, p + 1) [X y] block.
    L: np.ndarray
    C: np.ndarray  # (B, l1, p1, p1) per-level C_j
    ok: np.ndarray  # (B,) False where S was not positive definite
    # the sparse tail's random-effect part (CHOLMOD), None on the dense paths
    rr: SparseFactor | None = None

    def diagonal(self) -> np.ndarray:
        """(B, m): the diagonal of the tail's Cholesky factor.  With a sparse tail the
        first qr entries are in CHOLMOD's fill-reducing order (only their log-sum,
        log|S_rr| / 2, is order-free); the rest are the [X y] block's."""
        d = np.diagonal(self.L, axis1=-2, axis2=-1)
        if self.rr is None:
            return d
        return np.concatenate([self.rr.diagonal()[None], d], axis=1)


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
        self.tail_kind = "batched" if self.dense else tail_kind(self.m, sparse_possible=self.qr > 0)
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
    ) -> tuple[np.ndarray, np.ndarray, SparseFactor | None]:
        """(L, ok (1,), rr) for one theta and response on the single-theta path.

        Dense tail: L (1, m, m), rr None.  Sparse tail: L (1, p + 1, p + 1), the [X y]
        block, and rr the CHOLMOD part (:class:`mixboot.tail.SparseTail`).
        """
        if resp.B != 1 or P.shape[0] != 1:
            raise ValueError("the sparse path evaluates one theta and one response at a time")
        if self._single is None:
            kind = SparseTail if self.tail_kind == "sparse" else LeanTail
            self._single = kind(
                self.F_sparse, self.A22, self.l1, self.p1, self.rest, self.theta_slices[1:], self.qr
            )
        args = (theta[0], P[0], resp.z1y[0], resp.taily[0], float(resp.yty[0]))
        if isinstance(self._single, SparseTail):
            Lb, rr, ok = self._single.factor(*args)
            return Lb[None], np.array([ok]), rr
        L, ok = self._single.factor(*args)
        return L[None], np.array([ok]), None

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
        rr = None
        if self.dense:
            S = self._tail_dense(P, resp)
            self._scale_tail(S, theta)
            L, ok = _batched_cholesky(S)
        else:
            L, ok, rr = self._factor_single(theta, P, resp)
        d = np.diagonal(L, axis1=-2, axis2=-1)
        # where the [X y] block starts in L: qr, or 0 for a sparse tail's L_b
        k = self.qr if rr is None else 0
        with np.errstate(divide="ignore", invalid="ignore"):
            logd = np.log(d)
            if rr is None:
                logdet = logdet1 + 2.0 * logd[:, : self.qr].sum(axis=1)
            else:
                logdet = logdet1 + rr.logdet
            r2 = d[:, -1] ** 2
            if self.REML:
                dof = self.n - self.p
                obj = (
                    logdet
                    + 2.0 * logd[:, k : k + self.p].sum(axis=1)
                    + dof * (1.0 + _LOG2PI + np.log(r2 / dof))
                )
            else:
                obj = logdet + self.n * (1.0 + _LOG2PI + np.log(r2 / self.n))
        obj = np.where(ok & np.isfinite(obj), obj, np.inf)
        return Factorization(objective=obj, L=L, C=C, ok=ok, rr=rr)

    def objective(self, theta: np.ndarray) -> float:
        """The criterion at one theta for the model's own response."""
        return float(self.factorize(np.asarray(theta, dtype=float)[None, :]).objective[0])

    # -- estimates from a factorization ----------------------------------------
    def fixef_sigma(self, fac: Factorization) -> tuple[np.ndarray, np.ndarray]:
        """beta (B, p) and sigma (B,) from a batch factorization."""
        L = fac.L
        k = L.shape[-1] - self.p - 1  # qr; 0 for a sparse tail's [X y] block
        LXX = L[:, k : k + self.p, k : k + self.p]
        cX = L[:, -1, k : k + self.p]
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
        if fac.rr is not None:
            # W = L_rr^-1 P S_r,[X y]: u_r = P' L_rr^-T (W_y - W_X beta)
            W = fac.rr.W
            ur = (
                fac.rr.solve_rr(W[:, -1] - W[:, :-1] @ beta)
                if W is not None
                else np.full(self.qr, np.nan)
            )
        else:
            L = fac.L[0]
            crest = L[self.m0, : self.qr] - L[self.qr : self.m0, : self.qr].T @ beta
            ur = _solve_leading_lower_t(L, crest) if self.qr else np.zeros(0)
        b_rest, off, out_rest = [], 0, []
        for term, sl in zip(self.rest, self.theta_slices[1:]):
            u = ur[off : off + term.q].reshape(term.nlevels, term.p)
            out_rest.append(u)
            b_rest.append((u @ term.factor(theta[sl]).T).reshape(-1))
            off += term.q
        w = np.concatenate(b_rest + [beta])
        Fw = (
            self.F_sparse.T @ w if self.F is None else w @ self.F.reshape(self.m0, self.q1)
        ).reshape(self.l1, self.p1)
        T1 = self.t1.factor(theta[self.theta_slices[0]])
        rhs = (resp.z1y[0] - Fw) @ T1  # T1' (z1y_j - (F'w)_j)
        u1 = np.linalg.solve(fac.C[0], rhs[..., None])[..., 0]
        return split_blocks(self.blocks, [u1] + out_rest)

    def vcov_unscaled(self, fac: Factorization) -> np.ndarray:
        """(L_X L_X')^-1 for ONE factorization: vcov(beta) / sigma^2."""
        return self.vcov_unscaled_batch(fac)[0]

    def vcov_unscaled_batch(self, fac: Factorization) -> np.ndarray:
        """(L_X L_X')^-1 for each factorization of a batch: (B, p, p); NaN where it failed."""
        k = fac.L.shape[-1] - self.p - 1  # qr; 0 for a sparse tail's [X y] block
        LXX = fac.L[:, k : k + self.p, k : k + self.p]
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


def _lapack_dtrtrs():
    """LAPACK's dtrtrs through scipy's Cython table (takes a leading dimension), or None."""
    try:
        from scipy.linalg import cython_lapack

        capsule = cython_lapack.__pyx_capi__["dtrtrs"]
        get_name = ctypes.pythonapi.PyCapsule_GetName
        get_name.restype, get_name.argtypes = ctypes.c_char_p, [ctypes.py_object]
        get_ptr = ctypes.pythonapi.PyCapsule_GetPointer
        get_ptr.restype, get_ptr.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]
        ptr = get_ptr(capsule, get_name(capsule))
    except (ImportError, KeyError, AttributeError, ValueError):  # pragma: no cover
        return None
    if not ptr:  # pragma: no cover
        return None
    c_int_p, c_char_p, c_void_p = ctypes.POINTER(ctypes.c_int), ctypes.c_char_p, ctypes.c_void_p
    proto = ctypes.CFUNCTYPE(
        None, c_char_p, c_char_p, c_char_p, c_int_p, c_int_p, c_void_p, c_int_p, c_void_p,
        c_int_p, c_int_p,
    )  # fmt: skip
    return proto(ptr)


_DTRTRS = _lapack_dtrtrs()


def _solve_leading_lower_t(L: np.ndarray, b: np.ndarray) -> np.ndarray:
    """x with L[:n, :n]' x = b (n = len(b)), L lower triangular.

    On a Fortran-ordered L (the single-theta path's buffer, 0.75 GiB for a 10k tail)
    LAPACK reads the leading block in place through its leading dimension, where
    ``solve_triangular`` on the view would first copy it; otherwise (the small
    batched factors) the block is solved as before.
    """
    n, m = b.shape[0], L.shape[0]
    if _DTRTRS is None or not L.flags.f_contiguous or L.dtype != np.float64:
        return scipy.linalg.solve_triangular(L[:n, :n].T, b, lower=False, check_finite=False)
    x = np.array(b, dtype=np.float64, order="F", copy=True)
    N, nrhs, lda, info = (ctypes.c_int(v) for v in (n, 1, m, 0))
    _DTRTRS(
        b"L", b"T", b"N", ctypes.byref(N), ctypes.byref(nrhs),
        L.ctypes.data_as(ctypes.c_void_p), ctypes.byref(lda),
        x.ctypes.data_as(ctypes.c_void_p), ctypes.byref(N), ctypes.byref(info),
    )  # fmt: skip
    if info.value > 0:
        raise np.linalg.LinAlgError(
            f"singular matrix: resolution failed at diagonal {info.value - 1}"
        )
    if info.value < 0:  # pragma: no cover
        raise ValueError(f"illegal value in argument {-info.value} of dtrtrs")
    return x
