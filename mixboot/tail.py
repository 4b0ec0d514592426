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
:func:`tail_memory_limit`) is refused when the workspace is built, with a
:class:`TailMemoryError` naming the memory it would need.  (A 10,003-wide tail,
the 400,000-row crossed model of ``benchmarks/crossed.py``, needs 0.75 GiB.)
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


def tail_memory_error(m: int, limit: int) -> TailMemoryError:
    """The error for a tail too wide to hold densely."""
    return TailMemoryError(
        f"the model's tail block (the random-effect terms after the first, the fixed "
        f"effects and the response) is {m} x {m}; factoring it densely needs "
        f"{_gib(dense_tail_bytes(m))} of memory, more than the limit of {_gib(limit)} "
        f"({MEMORY_FRACTION:g} of the available memory, or MIXBOOT_TAIL_MEMORY if set). "
        f"Free memory or raise MIXBOOT_TAIL_MEMORY (bytes, or e.g. 16G) if the machine has "
        f"it; a sparse factorization of such tails is not available"
    )


def tail_kind(m: int) -> str:
    """How the single-theta path holds an m-wide tail: ``"dense"`` (the lean in-place
    tail) when :func:`dense_tail_bytes` is within :func:`tail_memory_limit`; otherwise
    raises :class:`TailMemoryError`, naming the memory the dense tail would need."""
    limit = tail_memory_limit()
    if dense_tail_bytes(m) <= limit:
        return "dense"
    raise tail_memory_error(m, limit)


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
        keys = np.union1d(key_m, key_a)
        pos_m, pos_a = np.searchsorted(keys, key_m), np.searchsorted(keys, key_a)
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
        vals = self.base - self.K @ P.reshape(-1)
        s = self.scales(theta)
        for a, b, gr, gc in self.segments:
            f = s[gr] * s[gc]
            if f != 1.0:
                vals[a:b] *= f
        flat[self.keys] = vals
        Py = (P @ z1y[..., None])[..., 0].reshape(-1)
        srow = s[self.owner]
        buf[m0, :m0] = (taily - self.F @ Py) * srow
        buf[m0, m0] = yty - z1y.reshape(-1) @ Py
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
