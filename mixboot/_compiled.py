"""Optional compiled kernels (numba), imported lazily; numpy versions stand in without it.

``pip install "mixboot[fast]"`` adds numba.  Each kernel works problem by problem
in a fixed order, so a problem's numbers do not depend on its batch mates on
either path; the two paths differ from each other only by rounding (the order of
additions).  Set ``MIXBOOT_NO_NUMBA=1`` to use numpy even where numba is installed.

Kernels: ``scatter_cells`` (GLMM cell sums, :mod:`mixboot.pirls`) and
``grouped_objective`` (the profiled criterion by level groups,
:mod:`mixboot.grouped`).
"""

from __future__ import annotations

import os

__all__ = ["grouped_newton", "grouped_objective", "scatter_cells"]

_KERNELS: dict = {}


def _numba():
    if os.environ.get("MIXBOOT_NO_NUMBA", "") not in ("", "0"):
        return None
    try:
        import numba
    except ImportError:
        return None
    return numba


def _build_scatter_cells(numba):
    @numba.njit(cache=True, nogil=True)
    def kernel(out, positions, prod, v):  # pragma: no cover - compiled
        # out[b, positions[i, j]] += v[b, i] * prod[i, j], observation by observation
        B, n = v.shape
        k = positions.shape[1]
        for b in range(B):
            for i in range(n):
                vi = v[b, i]
                for j in range(k):
                    out[b, positions[i, j]] += vi * prod[i, j]

    return kernel


def _build_grouped(numba):
    from . import _grouped_kernels

    return _grouped_kernels.objective, _grouped_kernels.newton


def _build_grouped_objective(numba):
    return _load("grouped")[0] if _load("grouped") is not None else None


def _build_grouped_newton(numba):
    return _load("grouped")[1] if _load("grouped") is not None else None


_BUILDERS = {
    "scatter_cells": _build_scatter_cells,
    "grouped": _build_grouped,
    "grouped_objective": _build_grouped_objective,
    "grouped_newton": _build_grouped_newton,
}


def _load(name: str):
    if name not in _KERNELS:
        numba = _numba()
        _KERNELS[name] = None if numba is None else _BUILDERS[name](numba)
    return _KERNELS[name]


def scatter_cells():
    """The compiled cell-sum kernel, or None (numba absent or switched off)."""
    return _load("scatter_cells")


def grouped_objective():
    """The compiled grouped-criterion kernel, or None (numba absent or switched off)."""
    return _load("grouped_objective")


def grouped_newton():
    """The compiled Newton method on the grouped criterion, or None."""
    return _load("grouped_newton")
