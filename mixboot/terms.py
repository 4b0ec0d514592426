"""A random-effects term: grouping codes, its model matrix, and theta -> lambda.

For a term with ``p`` columns and ``l`` levels the relative covariance factor is
``Lambda_k = I_l (x) T`` with ``T`` lower triangular, ``T T' = Sigma_k / sigma^2``.
theta holds the lower triangle of ``T`` column by column (lme4's order); the
diagonal elements are bounded below by zero.

>>> import numpy as np
>>> term = ReTerm(label="g", group_vars=("g",), expr="1 + x", colnames=("(Intercept)", "x"),
...               levels=("a", "b"), codes=np.array([0, 0, 1, 1]),
...               zraw=np.array([[1., 0.], [1., 1.], [1., 0.], [1., 1.]]))
>>> term.theta_names
('g.(Intercept)', 'g.x.(Intercept)', 'g.x')
>>> term.factor(np.array([1.0, 0.5, 2.0]))
array([[1. , 0. ],
       [0.5, 2. ]])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

__all__ = ["LevelColumns", "ReTerm"]


class LevelColumns:
    """The shape of a random-effect term or block: ``colnames`` columns for each of ``levels``."""

    colnames: tuple[str, ...]
    levels: tuple

    @property
    def p(self) -> int:
        return len(self.colnames)

    @property
    def nlevels(self) -> int:
        return len(self.levels)

    @property
    def q(self) -> int:
        return self.p * self.nlevels


@dataclass(frozen=True, eq=False)
class ReTerm(LevelColumns):
    label: str
    group_vars: tuple[str, ...]
    expr: str
    colnames: tuple[str, ...]
    levels: tuple
    codes: np.ndarray = field(repr=False)
    zraw: np.ndarray = field(repr=False)

    @property
    def n_theta(self) -> int:
        return self.p * (self.p + 1) // 2

    @cached_property
    def tril(self) -> tuple[np.ndarray, np.ndarray]:
        """Row and column indices of theta's elements in T (column-major lower triangle)."""
        cols, rows = np.triu_indices(self.p)
        return rows, cols

    @cached_property
    def diagonal(self) -> np.ndarray:
        """Boolean mask over this term's theta: True where the element is on T's diagonal."""
        rows, cols = self.tril
        return rows == cols

    @property
    def lower_bounds(self) -> np.ndarray:
        return np.where(self.diagonal, 0.0, -np.inf)

    @property
    def theta_start(self) -> np.ndarray:
        return self.diagonal.astype(float)

    @property
    def theta_names(self) -> tuple[str, ...]:
        rows, cols = self.tril
        return tuple(
            f"{self.label}.{self.colnames[r]}"
            if r == c
            else f"{self.label}.{self.colnames[r]}.{self.colnames[c]}"
            for r, c in zip(rows, cols)
        )

    def factor(self, theta: np.ndarray) -> np.ndarray:
        """T for one theta (n_theta,) or a batch (..., n_theta) -> (..., p, p)."""
        theta = np.asarray(theta, dtype=float)
        out = np.zeros(theta.shape[:-1] + (self.p, self.p))
        rows, cols = self.tril
        out[..., rows, cols] = theta
        return out

    def lower_triangle(self, theta: np.ndarray) -> np.ndarray:
        """T's lower triangle, column by column: a term's theta is exactly that (a
        :class:`mixboot.blocks.FactorBlock` fills in its structural zeros)."""
        return np.asarray(theta, dtype=float)

    def theta_from_factor(self, T: np.ndarray) -> np.ndarray:
        rows, cols = self.tril
        return np.asarray(T)[..., rows, cols]

    def canonical(self, theta: np.ndarray) -> np.ndarray:
        """Flip the sign of each column of T whose diagonal is negative.

        The objective depends on T only through T T', which a column's sign does
        not change, so this maps any theta onto the equivalent one inside lme4's
        bounds.
        """
        T = self.factor(theta)
        d = np.diagonal(T, axis1=-2, axis2=-1)
        sign = np.where(d < 0, -1.0, 1.0)
        return self.theta_from_factor(T * sign[..., None, :])
