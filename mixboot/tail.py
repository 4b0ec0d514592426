"""The single-theta tail of a large model, built in place (lower triangle only).

A large model (``Workspace.dense`` False) evaluates one theta at a time.  Its
tail block (see :mod:`mixboot.workspace`)

    S = Lt' (A22 - F blockdiag(P_j) F') Lt + Ir,   with the response row below,

is written straight into one Fortran-ordered m x m buffer, lower triangle only,
and LAPACK's ``dpotrf`` factors it in place: no temporaries of the tail's size.

* ``A22 - M`` (M = F blockdiag(P_j) F') has a fixed sparsity pattern.  The union
  of A22's and M's lower-triangle patterns is found once; ``K`` maps vec(P) to
  M's values on that pattern (one sparse matrix-vector product per evaluation),
  and the values are scattered into the buffer through a precomputed index map.
  A22 is kept sparse: a 10,000-wide tail of a crossed model is mostly diagonal.
* The scaling by Lt: a scalar term ``(1|g)`` multiplies row and column blocks by
  one number, so the pattern's entries are grouped by (row term, column term) and
  each group's values are scaled by one product before the scatter.  A vector
  term (p > 1) mixes rows within a level's block; it is applied to the buffer in
  three pieces that each stay in the lower triangle, mirroring only the term's
  own diagonal square.
* The strict upper triangle of the returned factor is not cleaned (nothing reads
  it) except within the trailing [X y] block, which ``vcov_unscaled`` inverts.

The buffer is reused across evaluations unless a factorization handed out
earlier is still alive (its ``L`` views the buffer), so a caller that keeps
factorizations -- a profile, Satterthwaite's df -- gets independent arrays.

A tail too large for dense memory (:func:`dense_tail_bytes` above
:func:`tail_memory_limit`) is factored sparsely (:class:`SparseTail`) when
scikit-sparse's CHOLMOD is installed (the ``sparse`` extra); otherwise it is
refused when the workspace is built, with a :class:`TailMemoryError` naming the
memory it would need and the extra to install.  (A 10,003-wide tail, the
400,000-row crossed model of ``benchmarks/crossed.py``, needs 0.75 GiB densely.)
``MIXBOOT_TAIL`` = ``auto`` (the default), ``dense`` or ``sparse`` forces a choice.

The sparse tail factors only the random-effect block S_rr (qr x qr) with CHOLMOD's
supernodal Cholesky: its fill-reducing ordering and symbolic factor are computed
once per workspace on a fixed pattern, each evaluation refactors numerically.
The [X y] part (p + 1 columns) follows by a dense Schur complement:
W = L_rr^-1 P S_r,[X y] and L_b L_b' = S_[X y] - W'W, so that L_b is exactly the
trailing block of the dense factor (the same beta system, r^2 = L_b[-1, -1]^2).
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Sequence

import numpy as np
import scipy.linalg
import scipy.sparse as sp

__all__ = [
    "LeanTail",
    "SparseTail",
    "SparseFactor",
    "sparse_available",
    "TailMemoryError",
    "dense_tail_bytes",
    "tail_memory_limit",
    "pair_entries",
    "MEMORY_FRACTION",
]

# The dense single-theta tail may use at most this fraction of the available memory
# (MemAvailable) unless MIXBOOT_TAIL_MEMORY sets a limit in bytes (suffixes K, M, G).
MEMORY_FRACTION = 0.5
# Up to this width the whole buffer is zeroed at once, above it column by column (lower part).
_FILL_ALL = 4096
_SUFFIX = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
_TAIL_KINDS = ("auto", "dense", "sparse")
SPARSE_EXTRA = (
    'pip install "mixboot[sparse]" (scikit-sparse; building it needs SuiteSparse\'s headers, '
    "e.g. Debian's libsuitesparse-dev)"
)


class TailMemoryError(MemoryError):
    """The dense tail of a large model would need more memory than allowed."""


def dense_tail_bytes(m: int) -> int:
    """Bytes of the dense single-theta tail buffer (m x m doubles, factored in place)."""
    return 8 * int(m) * int(m)


def _available_memory() -> int:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def tail_memory_limit() -> int:
    """The most bytes a dense single-theta tail may take.

    ``MIXBOOT_TAIL_MEMORY`` (bytes, or a number with a K/M/G/T suffix) if set;
    otherwise :data:`MEMORY_FRACTION` of the memory available now.
    """
    raw = os.environ.get("MIXBOOT_TAIL_MEMORY", "").strip()
    if raw:
        scale = _SUFFIX.get(raw[-1].upper(), 1)
        number = raw[:-1] if raw[-1].upper() in _SUFFIX else raw
        try:
            value = float(number) * scale
        except ValueError:
            raise ValueError(
                f"MIXBOOT_TAIL_MEMORY must be a number of bytes (optionally with a K, M, G "
                f"or T suffix), got {raw!r}"
            ) from None
        if not value > 0:
            raise ValueError(f"MIXBOOT_TAIL_MEMORY must be positive, got {raw!r}")
        return int(value)
    return int(MEMORY_FRACTION * _available_memory())


def _gib(nbytes: float) -> str:
    return f"{nbytes / 2**30:.2f} GiB"


def sparse_available() -> bool:
    """Whether scikit-sparse's CHOLMOD (the ``sparse`` extra) can be imported."""
    try:
        import sksparse.cholmod  # noqa: F401
    except ImportError:
        return False
    return True


def tail_setting() -> str:
    """``MIXBOOT_TAIL``: ``auto`` (default; sparse only when the dense tail is over the
    memory limit), ``dense`` or ``sparse``."""
    raw = os.environ.get("MIXBOOT_TAIL", "").strip().lower() or "auto"
    if raw not in _TAIL_KINDS:
        raise ValueError(
            f"MIXBOOT_TAIL must be one of {', '.join(_TAIL_KINDS)}, got "
            f"{os.environ.get('MIXBOOT_TAIL')!r}"
        )
    return raw


def tail_memory_error(m: int, limit: int, sparse: bool | None = None) -> TailMemoryError:
    """The error for a tail too wide to hold densely.

    ``sparse``: whether the sparse factorization is installed (looked up if None); the
    message names the extra to install when it is not, or ``MIXBOOT_TAIL`` when it is.
    """
    if sparse is None:
        sparse = sparse_available()
    how = (
        "or let it be factored sparsely (unset MIXBOOT_TAIL=dense, or set MIXBOOT_TAIL=sparse)"
        if sparse
        else f"or install the sparse (CHOLMOD) factorization of such tails: {SPARSE_EXTRA}"
    )
    return TailMemoryError(
        f"the model's tail block (the random-effect terms after the first, the fixed "
        f"effects and the response) is {m} x {m}; factoring it densely needs "
        f"{_gib(dense_tail_bytes(m))} of memory, more than the limit of {_gib(limit)} "
        f"({MEMORY_FRACTION:g} of the available memory, or MIXBOOT_TAIL_MEMORY if set). "
        f"Free memory or raise MIXBOOT_TAIL_MEMORY (bytes, or e.g. 16G) if the machine has "
        f"it, {how}"
    )


def tail_kind(m: int, sparse_possible: bool = True) -> str:
    """How the single-theta path holds an m-wide tail.

    ``"dense"`` (the lean in-place tail) when :func:`dense_tail_bytes` is within
    :func:`tail_memory_limit`; ``"sparse"`` (:class:`SparseTail`) above it when
    scikit-sparse is installed; otherwise raises :class:`TailMemoryError`, naming the
    memory the dense tail would need and the extra to install.  ``MIXBOOT_TAIL``
    (:func:`tail_setting`) forces ``dense`` (still refused above the limit) or
    ``sparse`` (an ImportError naming the extra when scikit-sparse is missing).
    ``sparse_possible`` False (a tail without random-effect columns) means dense.
    """
    setting = tail_setting()
    if setting == "sparse" and sparse_possible:
        if not sparse_available():
            raise ImportError(f"MIXBOOT_TAIL=sparse needs scikit-sparse: {SPARSE_EXTRA}")
        return "sparse"
    limit = tail_memory_limit()
    if dense_tail_bytes(m) <= limit:
        return "dense"
    available = sparse_available()
    if setting == "auto" and sparse_possible and available:
        return "sparse"
    raise tail_memory_error(m, limit, available)


# --------------------------------------------------------------------------- pattern
def pair_entries(
    F: sp.spmatrix, l1: int, p1: int, chunk: int = 2_000_000
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The nonzero products behind the lower triangle of F blockdiag(P_j) F'.

    Returns (row, col, pcol, val): entry ``val * P[pcol]`` (P flattened as
    (j, s, t)) adds to M[row, col], row >= col, with val = F[row, (j,s)] F[col, (j,t)].
    Levels are processed in chunks so that no temporary exceeds ``chunk`` pairs.
    """
    Fc = sp.csc_matrix(F)
    Fc.sort_indices()
    indptr, indices, data = Fc.indptr, Fc.indices, Fc.data
    out: list[list[np.ndarray]] = [[], [], [], []]
    for s in range(p1):
        for t in range(p1):
            starts_s, ends_s = indptr[s::p1][:l1], indptr[s + 1 :: p1][:l1]
            starts_t, ends_t = indptr[t::p1][:l1], indptr[t + 1 :: p1][:l1]
            na, nb = ends_s - starts_s, ends_t - starts_t
            count = (na * nb).astype(np.int64)
            cum = np.cumsum(count)
            lo = 0
            while lo < l1:
                base = cum[lo - 1] if lo else 0
                hi = int(np.searchsorted(cum, base + chunk, side="right"))
                hi = max(hi, lo + 1)
                levels = np.arange(lo, hi)
                cnt = count[lo:hi]
                group = np.repeat(levels, cnt)
                k = np.arange(cnt.sum()) - np.repeat(np.cumsum(cnt) - cnt, cnt)
                ia = starts_s[group] + k // nb[group]
                ib = starts_t[group] + k % nb[group]
                ra, rb = indices[ia], indices[ib]
                keep = ra >= rb
                out[0].append(ra[keep])
                out[1].append(rb[keep])
                out[2].append(group[keep] * (p1 * p1) + s * p1 + t)
                out[3].append(data[ia[keep]] * data[ib[keep]])
                lo = hi
    row, col, pcol = (np.concatenate(a).astype(np.int64) for a in out[:3])
    return row, col, pcol, np.concatenate(out[3])


#: Up to this many buffer entries (m * m) the union of two key sets is found with a
#: dense mark and lookup table (bytes: 9 per entry) instead of sorting.
_MARK_ENTRIES = 2**23


def _union_positions(a: np.ndarray, b: np.ndarray, size: int):
    """The sorted union of the keys ``a`` and ``b`` (all in [0, size)), and each key's
    position in it: (keys, position of a, position of b)."""
    if size > _MARK_ENTRIES:
        keys = np.union1d(a, b)
        return keys, np.searchsorted(keys, a), np.searchsorted(keys, b)
    mark = np.zeros(size, dtype=bool)
    mark[a] = True
    mark[b] = True
    keys = np.flatnonzero(mark)
    where = np.empty(size, dtype=np.int64)
    where[keys] = np.arange(keys.size)
    return keys, where[a], where[b]


# --------------------------------------------------------------------------- the tail
class LeanTail:
    """Builds and factors the single-theta tail of one workspace in place.

    ``F``: the (m0, l1 p1) sparse cross-product of the tail with the first term;
    ``A22``: the (m0, m0) tail cross-product, dense or sparse (lower triangle used);
    ``rest``/``slices``: the tail's random-effect terms and their theta slices.
    """

    def __init__(
        self, F: sp.spmatrix, A22, l1: int, p1: int, rest: Sequence, slices: Sequence, qr: int
    ) -> None:
        F = sp.csr_matrix(F)
        m0 = F.shape[0]
        m = m0 + 1
        self.F, self.m0, self.m, self.qr = F, m0, m, qr
        self.l1, self.p1 = l1, p1
        self.rest, self.slices = list(rest), list(slices)
        # tail row -> index of its term (len(rest) for the fixed-effect rows)
        nt = len(self.rest)
        owner = np.full(m0, nt, dtype=np.int64)
        off = 0
        self.offsets = []
        for k, term in enumerate(self.rest):
            owner[off : off + term.q] = k
            self.offsets.append(off)
            off += term.q
        if off != qr:
            raise ValueError(f"the tail's terms have {off} columns, expected {qr}")
        # A22's lower triangle (sparse)
        A = sp.tril(sp.coo_matrix(A22)).tocoo()
        keep = A.data != 0
        a_row, a_col, a_val = (
            A.row[keep].astype(np.int64),
            A.col[keep].astype(np.int64),
            A.data[keep],
        )
        row, col, pcol, val = pair_entries(F, l1, p1)
        # Union pattern, keyed by position in the Fortran-ordered m x m buffer.
        key_m = col * m + row
        key_a = a_col * m + a_row
        keys, pos_m, pos_a = _union_positions(key_m, key_a, m * m)
        del key_m, key_a
        # Group by (row term, column term) so a scalar term's scaling is one product per group.
        group = owner[keys % m] * (nt + 1) + owner[keys // m]
        order = np.argsort(group, kind="stable")  # keys stay sorted within a group
        keys, group = keys[order], group[order]
        inverse = np.empty_like(order)
        inverse[order] = np.arange(order.size)
        pos_m, pos_a = inverse[pos_m], inverse[pos_a]
        self.keys = keys
        self.base = np.zeros(keys.size)
        self.base[pos_a] = a_val
        self.K = sp.csr_matrix((val, (pos_m, pcol)), shape=(keys.size, l1 * p1 * p1))
        self.K.sum_duplicates()
        bounds = np.flatnonzero(np.diff(group)) + 1
        starts = np.concatenate([[0], bounds])
        ends = np.concatenate([bounds, [keys.size]])
        self.segments = [
            (int(a), int(b), int(group[a] // (nt + 1)), int(group[a] % (nt + 1)))
            for a, b in zip(starts, ends)
            if b > a
        ]
        self.owner = owner
        self.vector_terms = [k for k, t in enumerate(self.rest) if t.p > 1]
        self._buf: np.ndarray | None = None
        self._lock = threading.Lock()

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_buf"], state["_lock"] = None, None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    # -- buffer -----------------------------------------------------------------
    def _buffer(self) -> tuple[np.ndarray, bool]:
        """(buffer, needs_zeroing): the workspace's own buffer when no one else holds it."""
        with self._lock:
            buf = self._buf
            # refs: self._buf, the local name, getrefcount's argument
            if buf is not None and sys.getrefcount(buf) <= 3:
                return buf, True
            buf = np.zeros((self.m, self.m), order="F")
            if self._buf is None:
                self._buf = buf
            return buf, False

    def _zero_lower(self, flat: np.ndarray) -> None:
        m = self.m
        if m <= _FILL_ALL:
            flat.fill(0.0)  # one memset beats a loop over short columns
            return
        for j in range(m):
            flat[j * m + j : (j + 1) * m] = 0.0

    # -- one evaluation ---------------------------------------------------------
    def scales(self, theta: np.ndarray) -> np.ndarray:
        """Per term, the scalar factor T[0, 0] of a scalar term (1.0 for vector terms and X)."""
        s = np.ones(len(self.rest) + 1)
        for k, (term, sl) in enumerate(zip(self.rest, self.slices)):
            if term.p == 1:
                s[k] = float(term.factor(theta[sl])[0, 0])
        return s

    def values(
        self, theta: np.ndarray, P: np.ndarray, z1y: np.ndarray, taily: np.ndarray, yty: float
    ) -> tuple[np.ndarray, np.ndarray, float]:
        """(vals, yrow, yy): S's lower triangle on the pattern ``keys`` (scalar terms
        scaled, vector terms not yet), the response row's first m0 entries and S[m0, m0]."""
        vals = self.base - self.K @ P.reshape(-1)
        s = self.scales(theta)
        for a, b, gr, gc in self.segments:
            f = s[gr] * s[gc]
            if f != 1.0:
                vals[a:b] *= f
        Py = (P @ z1y[..., None])[..., 0].reshape(-1)
        yrow = (taily - self.F @ Py) * s[self.owner]
        return vals, yrow, float(yty - z1y.reshape(-1) @ Py)

    def build(
        self, theta: np.ndarray, P: np.ndarray, z1y: np.ndarray, taily: np.ndarray, yty: float
    ) -> np.ndarray:
        """The tail S for one theta and response, lower triangle, in a Fortran-ordered buffer.

        ``P``: (l1, p1, p1) blocks of the first term; ``z1y``: (l1, p1); ``taily``: (m0,).
        """
        m0, m = self.m0, self.m
        buf, dirty = self._buffer()
        flat = buf.T.reshape(-1)  # a view: flat[c * m + r] is buf[r, c]
        if dirty:
            self._zero_lower(flat)
        vals, yrow, yy = self.values(theta, P, z1y, taily, yty)
        flat[self.keys] = vals
        buf[m0, :m0] = yrow
        buf[m0, m0] = yy
        for k in self.vector_terms:
            self._vector_term(buf, k, theta)
        d = np.arange(self.qr)
        flat[d * (m + 1)] += 1.0
        return buf

    def _vector_term(self, buf: np.ndarray, k: int, theta: np.ndarray) -> None:
        """S <- T' S T on the rows and columns of vector term k, lower triangle only."""
        term, off = self.rest[k], self.offsets[k]
        q, p, lk = term.q, term.p, term.nlevels
        T = term.factor(theta[self.slices[k]])
        end = off + q
        if off:
            # rows of the term, columns before it: all strictly lower
            R = buf[off:end, :off].reshape(lk, p, off)
            buf[off:end, :off] = np.matmul(T.T, R).reshape(q, off)
        if end < self.m:
            # rows after the term, its columns: all strictly lower
            C = buf[end:, off:end].reshape(-1, lk, p)
            buf[end:, off:end] = np.matmul(C, T).reshape(-1, q)
        # the term's own square: mirror, then T' S T block by block
        sq = buf[off:end, off:end]
        sq = np.tril(sq) + np.tril(sq, -1).T
        sq = np.matmul(T.T, sq.reshape(lk, p, q)).reshape(q, lk, p)
        buf[off:end, off:end] = np.matmul(sq, T).reshape(q, q)

    def factor(
        self, theta: np.ndarray, P: np.ndarray, z1y: np.ndarray, taily: np.ndarray, yty: float
    ) -> tuple[np.ndarray, bool]:
        """(L, ok): the tail's Cholesky factor (m x m, lower; the buffer itself) and success."""
        buf = self.build(theta, P, z1y, taily, yty)
        L, info = scipy.linalg.lapack.dpotrf(buf, lower=1, clean=0, overwrite_a=1)
        if L is not buf:  # pragma: no cover - dpotrf copies only a non-Fortran array
            raise RuntimeError("dpotrf did not factor the tail in place")
        if info != 0:
            buf.fill(np.nan)
            return buf, False
        # vcov_unscaled inverts the [X y] block as a whole: clean its upper triangle.
        qr, m = self.qr, self.m
        iu = np.triu_indices(m - qr, 1)
        buf[qr + iu[0], qr + iu[1]] = 0.0
        return buf, True


# --------------------------------------------------------------------------- sparse tail
class SparseFactor:
    """One evaluation's sparse tail factor (see :class:`SparseTail`).

    ``factor``: CHOLMOD's supernodal factor of S_rr (P S_rr P' = L_rr L_rr'), None where
    S_rr was not positive definite; ``W``: L_rr^-1 P S_r,[X y], (qr, p + 1);
    ``logdet``: log|S_rr|.  The dense trailing block L_b is the Factorization's ``L``.
    """

    def __init__(
        self, qr: int, factor=None, W: np.ndarray | None = None, logdet: float = np.nan
    ) -> None:
        self.qr, self.factor, self.W, self.logdet = qr, factor, W, float(logdet)
        self._lock = threading.Lock()
        self._diag: np.ndarray | None = None

    def __getstate__(self) -> dict:
        # CHOLMOD's factor cannot be pickled: keep what the estimates need.
        state = self.__dict__.copy()
        state["_diag"] = self.diagonal()
        state["factor"], state["_lock"] = None, None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def diagonal(self) -> np.ndarray:
        """L_rr's diagonal (qr,), in CHOLMOD's fill-reducing order: the sum of twice its
        logs is log|S_rr|.  NaN where the factorization failed."""
        with self._lock:
            if self._diag is None:
                if self.factor is None:
                    self._diag = np.full(self.qr, np.nan)
                else:
                    self._diag = np.asarray(self.factor.L().diagonal(), dtype=float)
            return self._diag

    def solve_rr(self, crest: np.ndarray) -> np.ndarray:
        """P' L_rr^-T crest, in the tail's own order: the random-effect modes u_r from
        crest = W_y - W_X beta (as L_rr^-T crest is on the dense tail)."""
        if self.factor is None:
            return np.full(self.qr, np.nan)
        with self._lock:
            x = self.factor.solve_Lt(crest, use_LDLt_decomposition=False)
            return np.asarray(self.factor.apply_Pt(x), dtype=float).reshape(-1)


class SparseTail(LeanTail):
    """The single-theta tail factored sparsely: CHOLMOD for S_rr, dense for [X y].

    Shares :class:`LeanTail`'s pattern and values (:meth:`LeanTail.values`); no dense
    m x m buffer is made.  S_rr's lower triangle is held on one fixed pattern (with the
    diagonal, and the fill of vector terms' level blocks), analyzed once.
    """

    def __init__(
        self, F: sp.spmatrix, A22, l1: int, p1: int, rest: Sequence, slices: Sequence, qr: int
    ) -> None:
        super().__init__(F, A22, l1, p1, rest, slices, qr)
        if qr == 0:
            raise ValueError("the sparse tail needs random-effect columns in the tail")
        m, m0 = self.m, self.m0
        rows, cols = self.keys % m, self.keys // m
        rr = rows < qr
        br = (rows >= qr) & (cols < qr)
        bb = cols >= qr
        self._rr, self._br, self._bb = (np.flatnonzero(a) for a in (rr, br, bb))
        self._br_at = (rows[br] - qr, cols[br])
        self._bb_at = (rows[bb] - qr, cols[bb] - qr)
        r, c = rows[rr], cols[rr]
        if self.vector_terms:
            # T' A T mixes rows and columns within a level's block: take the pattern of
            # D' |A| D with D's lower-triangular blocks all ones (no cancellation).
            A1 = sp.coo_matrix((np.ones(r.size), (r, c)), shape=(qr, qr)).tocsr()
            A1 = A1 + A1.T
            D1 = self._mixer(None)[:qr, :qr]
            G = sp.tril(D1.T @ A1 @ D1).tocoo()
            r, c = G.row.astype(np.int64), G.col.astype(np.int64)
            # the full m x m pattern for the per-evaluation products
            self._full_rows = np.concatenate([rows, np.full(m, m0)])
            self._full_cols = np.concatenate([cols, np.arange(m)])
        d = np.arange(qr, dtype=np.int64)
        pk = np.union1d(c * qr + r, d * qr + d)  # column-major: CSC order
        self._pk = pk
        self._indices = (pk % qr).astype(np.int64)
        self._indptr = np.concatenate([[0], np.cumsum(np.bincount(pk // qr, minlength=qr))])
        self._rr_pos = np.searchsorted(pk, cols[rr] * qr + rows[rr])
        self._diag_pos = np.searchsorted(pk, d * qr + d)
        self._symbolic = None

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        state["_symbolic"] = None
        return state

    def _mixer(self, theta: np.ndarray | None) -> sp.csr_matrix:
        """blockdiag(T_k for vector terms, 1 elsewhere), m x m; theta None: the pattern
        (ones on each T's lower triangle)."""
        m = self.m
        rows, cols, vals = [np.arange(m)], [np.arange(m)], [np.ones(m)]
        keep = np.ones(m, dtype=bool)
        for k in self.vector_terms:
            term, off = self.rest[k], self.offsets[k]
            p, lk = term.p, term.nlevels
            keep[off : off + term.q] = False
            T = np.tril(np.ones((p, p))) if theta is None else term.factor(theta[self.slices[k]])
            a, b = np.nonzero(np.ones((p, p)))
            base = off + np.arange(lk)[:, None] * p
            rows.append((base + a).reshape(-1))
            cols.append((base + b).reshape(-1))
            vals.append(np.tile(T[a, b], lk))
        rows[0], cols[0], vals[0] = rows[0][keep], cols[0][keep], vals[0][keep]
        return sp.csr_matrix(
            (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(m, m)
        )

    def _analyze(self):
        from sksparse import cholmod

        qr = self.qr
        data = np.ones(self._pk.size)
        data[self._diag_pos] = float(qr + 1)  # only the pattern matters
        A = sp.csc_matrix((data, self._indices, self._indptr), shape=(qr, qr))
        return cholmod.analyze(A, mode="supernodal")

    def pieces(
        self, theta: np.ndarray, P: np.ndarray, z1y: np.ndarray, taily: np.ndarray, yty: float
    ) -> tuple[sp.csc_matrix, np.ndarray, np.ndarray]:
        """(S_rr's lower triangle (sparse, fixed pattern), S_[X y],r (p + 1, qr), S_[X y]
        (p + 1, p + 1), lower triangle)."""
        qr, nb = self.qr, self.m - self.qr
        vals, yrow, yy = self.values(theta, P, z1y, taily, yty)
        data = np.zeros(self._pk.size)
        Sb = np.zeros((nb, qr))
        Sbb = np.zeros((nb, nb))
        if not self.vector_terms:
            data[self._rr_pos] = vals[self._rr]
            Sb[self._br_at] = vals[self._br]
            Sb[-1] = yrow[:qr]
            Sbb[self._bb_at] = vals[self._bb]
            Sbb[-1, :-1] = yrow[qr:]
            Sbb[-1, -1] = yy
        else:
            m = self.m
            low = sp.csr_matrix(
                (np.concatenate([vals, yrow, [yy]]), (self._full_rows, self._full_cols)),
                shape=(m, m),
            )
            D = self._mixer(theta)
            G = (D.T @ (low + sp.triu(low.T, 1)) @ D).tocoo()
            r, c, v = G.row.astype(np.int64), G.col.astype(np.int64), G.data
            sel = (r < qr) & (r >= c)
            data[np.searchsorted(self._pk, c[sel] * qr + r[sel])] = v[sel]
            sel = (r >= qr) & (c < qr)
            Sb[r[sel] - qr, c[sel]] = v[sel]
            sel = (r >= qr) & (c >= qr)
            Sbb[r[sel] - qr, c[sel] - qr] = v[sel]
        data[self._diag_pos] += 1.0
        A = sp.csc_matrix((data, self._indices, self._indptr), shape=(qr, qr))
        return A, Sb, Sbb

    def factor(  # type: ignore[override]
        self, theta: np.ndarray, P: np.ndarray, z1y: np.ndarray, taily: np.ndarray, yty: float
    ) -> tuple[np.ndarray, SparseFactor, bool]:
        """(L_b, rr, ok): the dense (p + 1) trailing block of the tail's factor, the
        sparse part (:class:`SparseFactor`) and success."""
        from sksparse.cholmod import CholmodNotPositiveDefiniteError

        qr, nb = self.qr, self.m - self.qr
        A, Sb, Sbb = self.pieces(theta, P, z1y, taily, yty)
        failed = np.full((nb, nb), np.nan), SparseFactor(qr), False
        with self._lock:
            if self._symbolic is None:
                self._symbolic = self._analyze()
            try:
                f = self._symbolic.cholesky(A)
            except CholmodNotPositiveDefiniteError:
                return failed
            W = np.asarray(f.solve_L(f.apply_P(Sb.T), use_LDLt_decomposition=False))
            logdet = f.logdet()
        G = Sbb - W.T @ W
        Lb, info = scipy.linalg.lapack.dpotrf(G, lower=1, clean=1)
        if info != 0:
            return failed
        return Lb, SparseFactor(qr, f, W, logdet), True
