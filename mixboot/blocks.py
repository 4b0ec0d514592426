"""Random-effect terms on one grouping factor, amalgamated into one block.

``(1 + x || g)`` expands into two terms on ``g``, ``(1 | g)`` and ``(0 + x | g)``.
The numeric workspaces treat their first term's part of Z'Z as block diagonal
and everything else as a dense "tail"; left as two terms, the second term on the
largest factor would add all of its levels to the tail.  As MixedModels.jl does,
the workspaces instead merge consecutive terms that share one grouping factor
into one :class:`FactorBlock`: its columns are the terms' columns side by side,
its codes the factor's, and its relative covariance factor the block diagonal
of the terms' factors, so that the entries between two terms are structural
zeros, not parameters.

theta is not touched: lme4 orders terms by number of levels, so terms on one
factor are adjacent in ``spec.terms`` and a block's theta is the contiguous union
of its terms' theta, in their order.  What users see (theta names, VarCorr,
ranef) is per term; a block's values split back with :meth:`FactorBlock.split`.

>>> import numpy as np
>>> from mixboot.terms import ReTerm
>>> codes = np.array([0, 0, 1, 1])
>>> one, x = np.ones((4, 1)), np.array([[0.0], [1.0], [0.0], [1.0]])
>>> a = ReTerm("g", ("g",), "1", ("(Intercept)",), ("u", "v"), codes, one)
>>> b = ReTerm("g", ("g",), "0 + x", ("x",), ("u", "v"), codes, x)
>>> (block,) = amalgamate([a, b])
>>> block.p, block.q, block.n_theta
(2, 4, 2)
>>> block.factor(np.array([2.0, 3.0]))
array([[2., 0.],
       [0., 3.]])
>>> block.lower_triangle(np.array([2.0, 3.0]))
array([2., 0., 3.])
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property

import numpy as np

from .terms import LevelColumns, ReTerm

__all__ = ["FactorBlock", "amalgamate", "block_slices", "same_factor", "spec_order", "split_blocks"]

#: Merge terms on one factor (tests switch it off to compare with the unmerged path).
_ENABLED = True


class FactorBlock(LevelColumns):
    """Consecutive random-effect terms on one grouping factor, as one term.

    Has the interface the workspaces use of a :class:`~mixboot.terms.ReTerm`:
    ``p``, ``nlevels``, ``q``, ``codes``, ``zraw``, ``n_theta`` and ``factor``.
    Within a level the block's columns are its terms' columns in term order.
    """

    def __init__(self, members: Sequence[ReTerm]):
        members = tuple(members)
        if len(members) < 2:
            raise ValueError("a FactorBlock merges at least two terms")
        first = members[0]
        for t in members[1:]:
            if not same_factor(first, t):
                raise ValueError(
                    f"terms {first.label!r} ({first.expr}) and {t.label!r} ({t.expr}) "
                    "do not share one grouping factor"
                )
        self.members = members
        self.label = first.label
        self.group_vars = first.group_vars
        self.levels = first.levels
        self.codes = first.codes
        self.zraw = np.ascontiguousarray(np.concatenate([t.zraw for t in members], axis=1))
        self.colnames = tuple(c for t in members for c in t.colnames)
        ps = [t.p for t in members]
        nth = [t.n_theta for t in members]
        #: column offsets of the members within the block (len(members) + 1)
        self.col_offsets = tuple(int(o) for o in np.cumsum([0] + ps))
        #: theta offsets of the members within the block's theta (len(members) + 1)
        self.theta_offsets = tuple(int(o) for o in np.cumsum([0] + nth))

    @property
    def n_theta(self) -> int:
        return self.theta_offsets[-1]

    def factor(self, theta: np.ndarray) -> np.ndarray:
        """T = blockdiag(T_k) for one theta (n_theta,) or a batch (..., n_theta) -> (..., p, p)."""
        theta = np.asarray(theta, dtype=float)
        out = np.zeros(theta.shape[:-1] + (self.p, self.p))
        for k, t in enumerate(self.members):
            c0, c1 = self.col_offsets[k], self.col_offsets[k + 1]
            s0, s1 = self.theta_offsets[k], self.theta_offsets[k + 1]
            out[..., c0:c1, c0:c1] = t.factor(theta[..., s0:s1])
        return out

    @cached_property
    def _tril(self) -> tuple[np.ndarray, np.ndarray]:
        cols, rows = np.triu_indices(self.p)
        return rows, cols

    def lower_triangle(self, theta: np.ndarray) -> np.ndarray:
        """T's whole lower triangle, column by column (..., p (p + 1) / 2): the
        theta a single term of width p would have, structural zeros included."""
        rows, cols = self._tril
        return self.factor(theta)[..., rows, cols]

    def split(self, values: np.ndarray) -> list[np.ndarray]:
        """Per-level values (..., p) of the block -> one (..., p_k) array per member."""
        return [
            values[..., self.col_offsets[k] : self.col_offsets[k + 1]]
            for k in range(len(self.members))
        ]

    def __repr__(self) -> str:
        exprs = ", ".join(t.expr for t in self.members)
        return f"FactorBlock({self.label!r}: {exprs}; {self.nlevels} levels)"


def same_factor(a: ReTerm, b: ReTerm) -> bool:
    """Whether two terms group by one factor: same variables, levels and codes."""
    return (
        a.group_vars == b.group_vars
        and a.nlevels == b.nlevels
        and a.levels == b.levels
        and (a.codes is b.codes or np.array_equal(a.codes, b.codes))
    )


def amalgamate(terms: Sequence[ReTerm]) -> list[ReTerm | FactorBlock]:
    """Runs of consecutive terms on one grouping factor merged into FactorBlocks.

    A term alone on its factor stays as it is; the blocks keep the terms' order,
    so the blocks' theta slices (:func:`block_slices`) tile theta as the terms' do.
    """
    out: list[ReTerm | FactorBlock] = []
    run: list[ReTerm] = []
    for t in terms:
        if run and (not _ENABLED or not same_factor(run[0], t)):
            out.append(run[0] if len(run) == 1 else FactorBlock(run))
            run = []
        run.append(t)
    if run:
        out.append(run[0] if len(run) == 1 else FactorBlock(run))
    return out


def block_slices(blocks: Sequence[ReTerm | FactorBlock]) -> tuple[slice, ...]:
    """Each block's slice of theta (the union of its terms' slices)."""
    out, start = [], 0
    for b in blocks:
        out.append(slice(start, start + b.n_theta))
        start += b.n_theta
    return tuple(out)


def split_blocks(
    blocks: Sequence[ReTerm | FactorBlock], values: list[np.ndarray]
) -> list[np.ndarray]:
    """Per-block values (..., l, p_block) -> per-term values (..., l, p_k), in term order."""
    out: list[np.ndarray] = []
    for b, v in zip(blocks, values):
        out.extend(b.split(v) if isinstance(b, FactorBlock) else [v])
    return out


def spec_order(blocks: Sequence[ReTerm | FactorBlock]) -> np.ndarray | None:
    """Index that reorders a vector of random effects from block order to term order.

    In block order a block's columns run level by level over all its terms'
    columns; in term order (lme4's, ``spec.z_matrix()``'s) each term's come on
    their own.  ``u_terms = u_blocks[..., index]``; None when the two agree.
    """
    if not any(isinstance(b, FactorBlock) for b in blocks):
        return None
    parts, off = [], 0
    for b in blocks:
        pos = off + np.arange(b.q).reshape(b.nlevels, b.p)
        parts.extend(p.reshape(-1) for p in (b.split(pos) if isinstance(b, FactorBlock) else [pos]))
        off += b.q
    return np.concatenate(parts)
