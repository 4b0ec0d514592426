"""The numeric workspace of a generalized linear mixed model: batched PIRLS and
the Laplace / adaptive Gauss-Hermite deviance.

Notation (lme4): eta = offset + X beta + Z Lambda u, mu = linkinv(eta), u ~ N(0, I).
For given theta (and beta, or with beta estimated alongside u) the conditional
modes u* minimize the penalized deviance

    pwrss(u) = sum_i d_i(y_i, mu_i) + |u|^2          (d_i: the family's unit deviances),

found by penalized iteratively reweighted least squares (Fisher scoring): at the
current eta, with weights w = prior * mu_eta^2 / V(mu) and working response
z = eta - offset + (y - mu) / mu_eta, solve the penalized weighted least-squares
problem of an LMM,

    (Lambda' Z' W Z Lambda + I) u + Lambda' Z' W X beta = Lambda' Z' W (z - [X beta]),

with the blocked Cholesky kernels of :mod:`mixboot.workspace` (the first term's
block-diagonal part, then a dense tail).  A step that raises pwrss is halved.
The Laplace approximation to -2 log-likelihood, up to a constant, is

    D(theta, beta) = pwrss(u*) + log |Lambda' Z' W Z Lambda + I|,

with W at u*.  With one scalar random-effect term the integral factorizes by
group and adaptive Gauss-Hermite quadrature refines it (:func:`agq_deviance`).

Everything is batched over problems: B (theta, beta, response) triples in one
pass, each problem's arithmetic on its own rows only (per-problem bincounts and
stacked products), so a problem's numbers never depend on its batch mates.  A
problem that has converged is frozen by masks, not removed from the batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._compiled import scatter_cells
from .blocks import amalgamate, block_slices, spec_order
from .family import EPS, Family
from .workspace import (
    Responses,
    _batched_cholesky,
    _solve_upper_batched,
    scale_tail,
    tail_block,
    term1_blocks,
)

__all__ = ["GlmmWorkspace", "PirlsState"]

#: PIRLS stops when no element of u (or beta) moves by more than this in a step;
#: the state after that step is the answer (Fisher scoring converges fast near
#: the mode, so the criterion is then accurate to rounding).
PIRLS_TOL = 1e-10
PIRLS_MAX_ITER = 60
MAX_HALVINGS = 12


@dataclass(frozen=True)
class PirlsState:
    """Conditional modes and the Laplace pieces for a batch of problems."""

    u: np.ndarray  # (B, q) spherical random effects, terms in spec order
    beta: np.ndarray  # (B, p)
    eta: np.ndarray  # (B, n) linear predictor (offset included)
    devres: np.ndarray  # (B,) sum of unit deviances at u
    usq: np.ndarray  # (B,) |u|^2
    logdet: np.ndarray  # (B,) log |Lambda'Z'WZ Lambda + I|
    C: np.ndarray  # (B, l1, p1, p1) first-term blocks of that matrix
    L: np.ndarray  # (B, m, m) tail Cholesky factor (response row last)
    converged: np.ndarray  # (B,) bool
    iterations: np.ndarray  # (B,) int

    @property
    def laplace(self) -> np.ndarray:
        """The Laplace criterion pwrss + log-determinant (inf where PIRLS failed)."""
        d = self.devres + self.usq + self.logdet
        return np.where(self.converged & np.isfinite(d), d, np.inf)


def _working(family: Family, eta: np.ndarray, mu: np.ndarray, Y: np.ndarray, pw: np.ndarray):
    """IRLS weights w = pw mu_eta^2 / V(mu) and working response eta + (y - mu) / mu_eta.

    For the canonical links mu_eta = V(mu) (logit: mu (1 - mu), floored at R's
    epsilon as its C code does; log: mu), so w = pw mu_eta: one product fewer
    and no second exponential.
    """
    name = (family.name, family.link.name)
    if name == ("binomial", "logit"):
        me = np.maximum(mu * (1.0 - mu), EPS)
        return pw * me, eta + (Y - mu) / me
    if name == ("poisson", "log"):
        return pw * mu, eta + (Y - mu) / mu
    me = family.link.mu_eta(eta)
    return pw * me * me / family.variance(mu), eta + (Y - mu) / me


class _DevianceSum:
    """The summed unit deviances of responses Y (B, n) as a function of mu.

    d_i = 2 w_i [c_i - (y_i log mu_i + (1 - y_i) log(1 - mu_i))] (binomial) or
    2 w_i [c_i - (y_i log mu_i - mu_i)] (Poisson), with the terms in y alone (c_i)
    computed once per PIRLS run: two logarithms per observation and step, or one
    for 0/1 responses.
    """

    def __init__(self, family: Family, Y: np.ndarray, pw: np.ndarray):
        self.binomial = family.name == "binomial"
        self.w2 = 2.0 * pw
        self.Y = Y
        self.binary = self.binomial and bool(np.all((Y == 0) | (Y == 1)))
        with np.errstate(divide="ignore", invalid="ignore"):
            ylogy = np.where(Y > 0, Y * np.log(np.where(Y > 0, Y, 1.0)), 0.0)
            if self.binomial:
                Yc = 1.0 - Y
                ylogy = ylogy + np.where(Yc > 0, Yc * np.log(np.where(Yc > 0, Yc, 1.0)), 0.0)
            else:
                ylogy = ylogy - Y
        self.const = (self.w2 * ylogy).sum(axis=1)

    def __call__(self, mu: np.ndarray) -> np.ndarray:
        Y = self.Y
        with np.errstate(divide="ignore", invalid="ignore"):
            # the links keep mu inside (0, 1) (binomial) or above 0: the logs are finite
            if self.binary:
                ll = np.log(np.where(Y == 1.0, mu, 1.0 - mu))
            elif self.binomial:
                ll = Y * np.log(mu) + (1.0 - Y) * np.log1p(-mu)
            else:
                ll = Y * np.log(mu) - mu
        return self.const - np.ascontiguousarray(self.w2 * ll).sum(axis=1)


class _Block:
    """Columns of one random-effects term (or of X: one 'level', p columns)."""

    def __init__(self, codes: np.ndarray, zraw: np.ndarray, nlevels: int):
        self.codes = np.asarray(codes, dtype=np.int64)
        self.zraw = np.asarray(zraw, dtype=float)
        self.nlevels = int(nlevels)
        self.p = self.zraw.shape[1]
        self.q = self.p * self.nlevels


class _Order:
    """Observations sorted by cell (a level, or a pair of levels); the start of each
    cell's run.  Shared by every cross-product grouped the same way."""

    def __init__(self, key: np.ndarray):
        self.perm = np.argsort(key, kind="stable")
        sk = key[self.perm]
        self.starts = np.flatnonzero(np.r_[True, sk[1:] != sk[:-1]])
        self.cells = sk[self.starts]
        self.identity = bool(np.all(self.perm == np.arange(key.size)))
        self.singletons = self.starts.size == key.size  # one observation per cell

    def gather(self, v: np.ndarray) -> np.ndarray:
        return v if self.identity else v[:, self.perm]

    def sums(self, vs: np.ndarray) -> np.ndarray:
        """Per problem, the sum over each cell's run of the gathered values (axis 1)."""
        return vs if self.singletons else np.add.reduceat(vs, self.starts, axis=1)


class _CellSums:
    """Per problem, sums of v_i * a_i b_i' over the observations of each cell (level of
    block a, level of block b), placed into a flat output at fixed positions.

    The observations are sorted by cell once (:class:`_Order`); a call gathers the
    per-observation values in that order and adds each cell's run with
    ``np.add.reduceat``, row by row, so a problem's sums never depend on the other
    problems in the batch.  ``place(ca, cb)`` gives the flat output positions
    (cells, p_a * p_b) of the cells' entries; no two groupings share a position.
    """

    def __init__(self, a: _Block, b: _Block, place, orders: dict):
        # a block with one level (X, or the unit column) does not split cells
        split = tuple(blk for blk in (a, b) if blk.nlevels > 1)
        name = tuple(id(blk.codes) for blk in split)
        if name not in orders:
            key = np.zeros(a.codes.size, dtype=np.int64)
            for blk in split:
                key = key * blk.nlevels + blk.codes
            orders[name] = _Order(key)
        self.order = order = orders[name]
        self.name = name
        ca = (
            order.cells // b.nlevels
            if b.nlevels > 1 and len(split) == 2
            else (order.cells if a.nlevels > 1 else np.zeros_like(order.cells))
        )
        cb = (
            order.cells % b.nlevels
            if b.nlevels > 1 and len(split) == 2
            else (order.cells if b.nlevels > 1 else np.zeros_like(order.cells))
        )
        self.pos = place(ca, cb)
        prod = (a.zraw[:, :, None] * b.zraw[:, None, :]).reshape(a.zraw.shape[0], -1)
        self.prod = prod[order.perm]
        self.ones = bool(np.all(self.prod == 1.0))
        # for the compiled kernel: each observation's output positions, in data order
        cell = np.empty(a.codes.size, dtype=np.int64)
        cell[order.perm] = np.cumsum(np.isin(np.arange(a.codes.size), order.starts)) - 1
        self.obs_pos = np.ascontiguousarray(self.pos[cell], dtype=np.int64)
        self.obs_prod = np.ascontiguousarray(prod)

    def add(self, out: np.ndarray, v: np.ndarray, gathered: _Gathered) -> None:
        """out[:, pos] = the cell sums of v (B, n) times the products (out starts at 0)."""
        kernel = scatter_cells()
        if kernel is not None:
            kernel(out, self.obs_pos, self.obs_prod, v)
        else:
            self.put(out, gathered[self])

    def put(self, out: np.ndarray, vs: np.ndarray) -> None:
        """out[:, pos] = cell sums of the gathered values vs (B, n) times the products."""
        if self.ones:
            out[:, self.pos] = self.order.sums(vs)[:, :, None]
        else:
            out[:, self.pos] = self.order.sums(vs[:, :, None] * self.prod[None])


class _Gathered:
    """Per-observation values gathered once per order for one call of ``_system``."""

    def __init__(self, v: np.ndarray):
        self.v, self.cache = v, {}

    def __getitem__(self, cs: _CellSums) -> np.ndarray:
        if cs.name not in self.cache:
            self.cache[cs.name] = cs.order.gather(self.v)
        return self.cache[cs.name]


class _SparseSchur:
    """M = R P R' from the structural nonzeros of R (the tail's cross-products with the
    first term), for a tail much wider than the number of those nonzeros.

    Column block j of R (level j of the first term) has few nonzero rows when
    the tail's terms are nested in or crossed with the first term sparsely (an
    observation-level effect beside two others, say); then
    M[a, b] = sum_j sum_(beta, gamma) R[a, j beta] P_j[beta, gamma] R[b, j gamma] is a
    sum over pairs of nonzeros sharing a level, grouped by (a, b) once.
    """

    def __init__(self, nonzero: np.ndarray, m0: int, l1: int, p1: int):
        rows, cols = nonzero // (l1 * p1), nonzero % (l1 * p1)
        level, beta = cols // p1, cols % p1
        order = np.argsort(level, kind="stable")
        level_sorted = level[order]
        starts = np.searchsorted(level_sorted, np.arange(l1))
        ends = np.searchsorted(level_sorted, np.arange(l1), side="right")
        e1, e2 = [], []
        for j in range(l1):
            idx = order[starts[j] : ends[j]]
            a, b = np.meshgrid(idx, idx, indexing="ij")
            keep = rows[a] >= rows[b]
            e1.append(a[keep])
            e2.append(b[keep])
        e1, e2 = np.concatenate(e1), np.concatenate(e2)
        self.nonzero, self.rows, self.level, self.beta = nonzero, rows, level, beta
        target = rows[e1] * m0 + rows[e2]
        self.pairs = _Order(target)
        self.e1, self.e2 = e1[self.pairs.perm], e2[self.pairs.perm]
        self.pidx = level[self.e1] * p1 * p1 + beta[self.e1] * p1 + beta[self.e2]
        self.row_order = _Order(rows)
        self.m0, self.l1, self.p1 = m0, l1, p1

    @property
    def size(self) -> int:
        return self.e1.size

    def tail(self, F: np.ndarray, A22: np.ndarray, P: np.ndarray, resp: Responses) -> np.ndarray:
        """What :func:`mixboot.workspace.tail_block` gives, from the nonzeros only."""
        B, m0 = P.shape[0], self.m0
        Rv = F.reshape(B, -1)[:, self.nonzero]
        Pf = P.reshape(B, -1)
        vals = Rv[:, self.e1] * Rv[:, self.e2] * Pf[:, self.pidx]
        M = np.zeros((B, m0 * m0))
        M[:, self.pairs.cells] = self.pairs.sums(vals)
        S = np.zeros((B, m0 + 1, m0 + 1))
        S[:, :m0, :m0] = A22 - M.reshape(B, m0, m0)
        # the response row: R (P z1y) and z1y' P z1y
        z1y = resp.z1y
        Pz = np.matmul(P, z1y[..., None])[..., 0].reshape(B, -1)  # (B, q1)
        lev = self.level * self.p1 + self.beta
        row = np.zeros((B, m0))
        row[:, self.row_order.cells] = self.row_order.sums(self.row_order.gather(Rv * Pz[:, lev]))
        S[:, m0, :m0] = resp.taily - row
        S[:, m0, m0] = resp.yty - np.ascontiguousarray(z1y.reshape(B, -1) * Pz).sum(axis=1)
        # full symmetric, as the dense kernel gives
        S[:, :m0, :m0] = np.tril(S[:, :m0, :m0]) + np.swapaxes(np.tril(S[:, :m0, :m0], -1), -1, -2)
        S[:, :m0, m0] = S[:, m0, :m0]
        return S


def _block_place(pa: int, pb: int, row0: int, col0: int, width: int):
    """Positions in a row-major (rows, width) array of block (row0 + ca pa + i, col0 + cb pb + j)."""

    def place(ca, cb):
        rows = row0 + ca[:, None] * pa + np.arange(pa)[None, :]
        cols = col0 + cb[:, None] * pb + np.arange(pb)[None, :]
        return (rows[:, :, None] * width + cols[:, None, :]).reshape(ca.size, pa * pb)

    return place


class GlmmWorkspace:
    """The fixed structure of one GLMM (terms, X, family); PIRLS for batches.

    ``y`` is a proportion for binomial families (successes / trials) and
    ``prior_weights`` the trials times any case weights, as R's ``glm``.
    """

    def __init__(
        self,
        spec,
        family: Family,
        *,
        prior_weights: np.ndarray,
        trials: np.ndarray,
        offset: np.ndarray | None,
    ):
        self.spec, self.family = spec, family
        self.n, self.p = spec.n, spec.p
        self.X = np.ascontiguousarray(spec.X)
        self.Xt = np.ascontiguousarray(self.X.T)
        self.prior_weights = np.asarray(prior_weights, dtype=float)
        self.trials = np.asarray(trials, dtype=float)
        self.offset = np.zeros(self.n) if offset is None else np.asarray(offset, dtype=float)
        terms = spec.terms
        self.terms = terms  # u, b and eta: per term, in spec order
        self.term_slices = spec.theta_slices
        # the penalized system: terms on one factor as one block
        re_blocks = amalgamate(terms)
        self.t1, self.rest = re_blocks[0], re_blocks[1:]
        self.theta_slices = block_slices(re_blocks)
        self._u_order = spec_order(re_blocks)  # block order -> term order of u
        self.l1, self.p1, self.q1 = self.t1.nlevels, self.t1.p, self.t1.q
        self.qr = sum(t.q for t in self.rest)
        self.q = self.q1 + self.qr
        self.blocks = [_Block(t.codes, t.zraw, t.nlevels) for t in re_blocks]
        self.xblock = _Block(np.zeros(self.n, dtype=np.int64), self.X, 1)
        self.unit = _Block(np.zeros(self.n, dtype=np.int64), np.ones((self.n, 1)), 1)
        b1, p1 = self.blocks[0], self.p1
        self._orders: dict = {}
        # the first term's diagonal blocks, flat in (l1, p1, p1)
        self.sums11 = _CellSums(
            b1, b1, lambda ca, cb: ca[:, None] * p1 * p1 + np.arange(p1 * p1)[None, :], self._orders
        )
        self.sums1y = _CellSums(b1, self.unit, _block_place(p1, 1, 0, 0, 1), self._orders)
        self._tails = {}

    @property
    def bytes_per_replicate(self) -> int:
        """Working memory of one replicate in a batched refit: PIRLS holds about 20
        n-vectors and the penalized system's blocks."""
        return 8 * (self.n * 20 + self.q1 * self.p1 * 8 + (self.qr + self.p + 1) ** 2 * 8)

    # -- the tail's cross-products: rest terms, then X when beta is solved for ----
    def _tail_sums(self, joint: bool):
        key = bool(joint)
        if key not in self._tails:
            tail = list(self.blocks[1:]) + ([self.xblock] if joint else [])
            offs = [int(o) for o in np.cumsum([0] + [b.q for b in tail])]
            m0 = offs[-1]
            with_1, within, with_y = [], [], []
            for k, bk in enumerate(tail):
                with_1.append(
                    _CellSums(
                        bk,
                        self.blocks[0],
                        _block_place(bk.p, self.p1, offs[k], 0, self.q1),
                        self._orders,
                    )
                )
                if bk is not self.xblock:  # X'Wz and X'WX: stacked products per problem
                    with_y.append(
                        _CellSums(bk, self.unit, _block_place(bk.p, 1, offs[k], 0, 1), self._orders)
                    )
                for j, bj in enumerate(tail[: k + 1]):
                    if bj is self.xblock:
                        continue
                    within.append(
                        _CellSums(
                            bk, bj, _block_place(bk.p, bj.p, offs[k], offs[j], m0), self._orders
                        )
                    )
            nonzero = (
                np.unique(np.concatenate([cs.pos.ravel() for cs in with_1]))
                if with_1
                else np.zeros(0, dtype=np.int64)
            )
            schur = None
            if m0 and nonzero.size:
                # pairs of nonzeros per level, against the dense product's m0^2 l1 p1^2
                per_level = np.bincount((nonzero % self.q1) // self.p1, minlength=self.l1)
                if (per_level.astype(float) ** 2).sum() < 0.1 * m0 * m0 * self.l1:
                    schur = _SparseSchur(nonzero, m0, self.l1, self.p1)
            self._tails[key] = (m0, with_1, within, with_y, schur)
        return self._tails[key]

    def _tail(self, F, A22, P, resp, joint: bool) -> np.ndarray:
        schur = self._tail_sums(joint)[4]
        return tail_block(F, A22, P, resp) if schur is None else schur.tail(F, A22, P, resp)

    def _system(self, w: np.ndarray, zt: np.ndarray, joint: bool):
        """Weighted cross-products of [Z1, tail] and of the working response, per problem."""
        w = np.ascontiguousarray(w, dtype=float)
        B = w.shape[0]
        m0, with_1, within, with_y, _ = self._tail_sums(joint)
        gw = _Gathered(w)
        A11 = np.zeros((B, self.l1 * self.p1 * self.p1))
        self.sums11.add(A11, w, gw)
        F = np.zeros((B, m0 * self.q1))
        for cs in with_1:
            cs.add(F, w, gw)
        A22 = np.zeros((B, m0 * m0))
        for cs in within:
            cs.add(A22, w, gw)
        A22 = A22.reshape(B, m0, m0)
        wz = np.ascontiguousarray(w * zt)
        gwz = _Gathered(wz)
        taily = np.zeros((B, m0))
        for cs in with_y:
            cs.add(taily, wz, gwz)
        if joint:
            xo = m0 - self.p
            A22[:, xo:, xo:] = np.matmul(self.Xt[None], w[:, :, None] * self.X[None])
            taily[:, xo:] = np.matmul(self.Xt[None], wz[:, :, None])[:, :, 0]
        # mirror the lower triangle (blocks were formed for k >= j)
        A22 = np.tril(A22) + np.swapaxes(np.tril(A22, -1), -1, -2)
        z1y = np.zeros((B, self.q1))
        self.sums1y.add(z1y, wz, gwz)
        yty = np.ascontiguousarray(wz * zt).sum(axis=1)
        return (
            A11.reshape(B, self.l1, self.p1, self.p1),
            F.reshape(B, m0, self.l1, self.p1),
            A22,
            Responses(z1y.reshape(B, self.l1, self.p1), taily, yty),
        )

    # -- linear predictor -----------------------------------------------------
    def b_from_u(self, u: np.ndarray, theta: np.ndarray) -> list[np.ndarray]:
        """Per term b = Lambda u: list of (B, l_k, p_k)."""
        out, off = [], 0
        for t, sl in zip(self.terms, self.term_slices):
            uk = u[:, off : off + t.q].reshape(-1, t.nlevels, t.p)
            T = t.factor(theta[:, sl])
            out.append(np.matmul(uk, np.swapaxes(T, -1, -2)))
            off += t.q
        return out

    def fixed_part(self, beta: np.ndarray) -> np.ndarray:
        """offset + X beta for a batch of beta (B, p) -> (B, n).

        C order throughout: numpy sums a row of a non-contiguous (B, n) array in an
        order that depends on B, and a replicate's bits must not.
        """
        return (
            np.ascontiguousarray(np.matmul(self.X[None], beta[:, :, None])[:, :, 0]) + self.offset
        )

    def eta(
        self, u: np.ndarray, theta: np.ndarray, beta: np.ndarray, fixed: np.ndarray | None = None
    ) -> np.ndarray:
        eta = self.fixed_part(beta) if fixed is None else fixed
        for t, b in zip(self.terms, self.b_from_u(u, theta)):
            if t.p == 1:
                eta = eta + t.zraw[None, :, 0] * b[:, t.codes, 0]
            else:
                eta = eta + (t.zraw[None] * b[:, t.codes]).sum(axis=2)
        return eta

    # -- PIRLS ------------------------------------------------------------------
    def pirls(
        self,
        theta: np.ndarray,
        beta: np.ndarray,
        Y: np.ndarray,
        *,
        joint: bool,
        u0: np.ndarray | None = None,
        eta0: np.ndarray | None = None,
    ) -> PirlsState:
        """Conditional modes for a batch: theta (B, k), beta (B, p), Y (B, n).

        ``joint``: solve for beta along with u (lme4's nAGQ=0 step; ``beta`` is
        then only where the first step's linear predictor comes from, unless
        ``eta0`` is given).  ``u0``: starting modes (B, q), zeros by default.
        """
        theta = np.atleast_2d(np.asarray(theta, dtype=float))
        B = theta.shape[0]
        beta = np.array(np.broadcast_to(beta, (B, self.p)), dtype=float)
        # C order: a row sum's order of additions must not depend on the layout
        # (a transposed block of responses would be summed column by column)
        Y = np.ascontiguousarray(np.broadcast_to(np.asarray(Y, dtype=float), (B, self.n)))
        u = np.zeros((B, self.q)) if u0 is None else np.array(np.broadcast_to(u0, (B, self.q)))
        fam, link = self.family, self.family.link
        pw = self.prior_weights

        deviance = _DevianceSum(fam, Y, pw)

        # with beta fixed, offset + X beta is the same at every step
        fixed = None if joint else self.fixed_part(beta)

        def state(u, beta):
            eta = self.eta(u, theta, beta, fixed)
            mu = link.linkinv(eta)
            return eta, mu, deviance(mu), (u * u).sum(axis=1)

        eta, mu, dev, usq = state(u, beta)
        if eta0 is not None:
            # the first weights from a given linear predictor (GLM-style start)
            eta_w = np.array(np.broadcast_to(eta0, (B, self.n)))
            mu_w = link.linkinv(eta_w)
            pw_rss = np.full(B, np.inf)
        else:
            eta_w, mu_w = eta, mu
            pw_rss = dev + usq
        active = np.ones(B, dtype=bool)
        converged = np.zeros(B, dtype=bool)
        iters = np.zeros(B, dtype=np.int64)
        logdet = np.full(B, np.inf)
        C = np.zeros((B, self.l1, self.p1, self.p1))
        L = None
        last_step = np.full(B, np.inf)
        for _ in range(PIRLS_MAX_ITER):
            w, zt = _working(fam, eta_w, mu_w, Y, pw)
            # the working response less what is not solved for: the offset, and X beta
            # when beta is fixed
            zt -= self.offset if joint else fixed
            A11, F, A22, resp = self._system(w, zt, joint)
            Cb, logdet1, P = term1_blocks(self.t1, theta[:, self.theta_slices[0]], A11)
            S = self._tail(F, A22, P, resp, joint)
            scale_tail(S, theta, self.rest, self.theta_slices[1:], self.qr)
            Lb, ok = _batched_cholesky(S)
            if L is None:
                L = np.full_like(Lb, np.nan)
            d = np.diagonal(Lb, axis1=-2, axis2=-1)
            with np.errstate(divide="ignore", invalid="ignore"):
                ld = logdet1 + 2.0 * np.log(d[:, : self.qr]).sum(axis=1)
            # The weights were taken at the current u (after the first step): the
            # log-determinant and factor belong to it.  Frozen problems keep theirs.
            logdet[active], C[active], L[active] = ld[active], Cb[active], Lb[active]
            active &= ok
            done = active & (last_step <= PIRLS_TOL)
            converged |= done
            active &= ~done
            if not active.any():
                break
            u_new, beta_new = self._solve(theta, Cb, Lb, F, resp, joint, beta)
            step_u, step_b = u_new - u, beta_new - beta
            size = np.maximum(
                np.abs(step_u).max(axis=1, initial=0.0), np.abs(step_b).max(axis=1, initial=0.0)
            )
            # step halving on pwrss, per problem: the first fraction 1, 1/2, 1/4, ...
            # that does not raise it is taken
            factor = np.ones(B)
            taken = ~active
            for _h in range(MAX_HALVINGS + 1):
                ut = u + factor[:, None] * step_u
                bt = beta + factor[:, None] * step_b
                eta_t, mu_t, dev_t, usq_t = state(ut, bt)
                crit = dev_t + usq_t
                sel = ~taken & np.isfinite(crit) & (crit <= pw_rss * (1 + 1e-12) + 1e-12)
                u[sel], beta[sel], eta[sel], mu[sel] = ut[sel], bt[sel], eta_t[sel], mu_t[sel]
                dev[sel], usq[sel] = dev_t[sel], usq_t[sel]
                last_step[sel] = factor[sel] * size[sel]
                taken |= sel
                if taken.all():
                    break
                factor = np.where(taken, factor, 0.5 * factor)
            # no fraction helped: at the mode already when the step was negligible
            stuck = active & ~taken
            converged |= stuck & (size <= 1e-6)
            active &= ~stuck
            pw_rss = np.where(active, dev + usq, pw_rss)
            eta_w = np.where(active[:, None], eta, eta_w)
            mu_w = np.where(active[:, None], mu, mu_w)
            iters += active
        return PirlsState(
            u=u,
            beta=beta,
            eta=eta,
            devres=dev,
            usq=usq,
            logdet=logdet,
            C=C,
            L=L,
            converged=converged & np.isfinite(logdet),
            iterations=iters,
        )

    def vcov_rx(self, theta: np.ndarray, eta: np.ndarray) -> np.ndarray:
        """(R_X' R_X)^-1 at the weights of ``eta`` for ONE theta: lme4's ``unsc()``.

        The beta block of the inverse of the penalized information given theta
        (beta and u solved together, theta held fixed).
        """
        link, fam = self.family.link, self.family
        me = link.mu_eta(eta)
        w = (self.prior_weights * me * me / fam.variance(link.linkinv(eta)))[None]
        A11, F, A22, resp = self._system(w, np.zeros_like(w), True)
        theta = np.atleast_2d(theta)
        _, _, P = term1_blocks(self.t1, theta[:, self.theta_slices[0]], A11)
        S = self._tail(F, A22, P, resp, True)
        scale_tail(S, theta, self.rest, self.theta_slices[1:], self.qr)
        m0 = S.shape[-1] - 1
        LXX = np.linalg.cholesky(S[0, :m0, :m0])[self.qr :, self.qr :]
        inv = np.linalg.inv(LXX)
        return inv.T @ inv

    def _solve(self, theta, C, L, F, resp, joint: bool, beta):
        """u (and beta when ``joint``) from the factor of the weighted system, per problem."""
        B = theta.shape[0]
        qr, m0 = self.qr, L.shape[-1] - 1
        if joint:
            LXX = L[:, qr:m0, qr:m0]
            cX = L[:, m0, qr:m0]
            beta = _solve_upper_batched(np.swapaxes(LXX, -1, -2), cX)
            crest = (
                L[:, m0, :qr]
                - np.matmul(np.swapaxes(L[:, qr:m0, :qr], -1, -2), beta[:, :, None])[:, :, 0]
            )
        else:
            crest = L[:, m0, :qr]
        if qr:
            ur = _solve_upper_batched(np.swapaxes(L[:, :qr, :qr], -1, -2), crest)
        else:
            ur = np.zeros((B, 0))
        # w = [Lambda_rest u_rest, beta (joint)]: the tail's coefficients
        parts, off = [], 0
        for t, sl in zip(self.rest, self.theta_slices[1:]):
            uk = ur[:, off : off + t.q].reshape(B, t.nlevels, t.p)
            T = t.factor(theta[:, sl])
            parts.append(np.matmul(uk, np.swapaxes(T, -1, -2)).reshape(B, -1))
            off += t.q
        if joint:
            parts.append(beta)
        wcoef = np.concatenate(parts, axis=1) if parts else np.zeros((B, 0))
        Fw = np.matmul(wcoef[:, None, :], F.reshape(B, m0, self.q1))[:, 0, :].reshape(
            B, self.l1, self.p1
        )
        T1 = self.t1.factor(theta[:, self.theta_slices[0]])
        rhs = np.matmul(resp.z1y - Fw, T1)  # T1'(z1y - F'w)
        u1 = rhs / C[..., 0] if self.p1 == 1 else np.linalg.solve(C, rhs[..., None])[..., 0]
        u = np.concatenate([u1.reshape(B, -1), ur], axis=1)
        return (u if self._u_order is None else u[:, self._u_order]), beta


def gauss_hermite(k: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights of k-point Gauss-Hermite quadrature for the standard normal (sum 1)."""
    z, w = np.polynomial.hermite_e.hermegauss(k)
    return z, w / w.sum()


def agq_correction(
    ws: GlmmWorkspace, state: PirlsState, theta: np.ndarray, Y: np.ndarray, nodes: int
) -> np.ndarray:
    """What adaptive Gauss-Hermite quadrature adds to the Laplace criterion (B,).

    One scalar random-effect term: the likelihood is a product over its levels j
    of one-dimensional integrals.  Around the mode u*_j with scale s_j = 1/L_jj,

        -2 log int = log L_jj^2 + a*_j - 2 log sum_k w_k exp(-(a_jk - a*_j) / 2),
        a_jk = d_j(u*_j + s_j z_k) + (u*_j + s_j z_k)^2 - z_k^2,

    (d_j: the level's summed unit deviances; a*_j: the same at the mode), so the
    correction is the last term summed over levels; with one node it is zero.
    """
    t1 = ws.t1
    B = state.u.shape[0]
    z, w = gauss_hermite(nodes)
    fam, pw = ws.family, ws.prior_weights
    lam = theta[:, ws.theta_slices[0]][:, 0]  # (B,)
    s = 1.0 / np.sqrt(state.C[:, :, 0, 0])  # (B, l1)
    dz = lam[:, None] * t1.zraw[None, :, 0] * s[:, t1.codes]  # d eta / d z
    Y = np.ascontiguousarray(np.broadcast_to(Y, state.eta.shape))

    level = _CellSums(
        _Block(t1.codes, np.ones((ws.n, 1)), ws.l1), ws.unit, _block_place(1, 1, 0, 0, 1), {}
    )

    def by_level(dev):  # (B, n) -> (B, l1)
        out = np.zeros((B, ws.l1))
        level.put(out, level.order.gather(dev))
        return out

    at_mode = by_level(fam.dev_resids(Y, fam.link.linkinv(state.eta), pw)) + state.u**2
    total = np.zeros((B, ws.l1))
    for zk, wk in zip(z, w):
        dev = by_level(fam.dev_resids(Y, fam.link.linkinv(state.eta + zk * dz), pw))
        uk = state.u + s * zk
        total += wk * np.exp(-0.5 * (dev + uk * uk - zk * zk - at_mode))
    return -2.0 * np.log(total).sum(axis=1)
