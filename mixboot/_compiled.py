"""Optional compiled kernels (numba), imported lazily; numpy versions stand in without it.

``pip install "mixboot[fast]"`` adds numba.  Each kernel works problem by problem
in a fixed order, so a problem's numbers do not depend on its batch mates on
either path; the two paths differ from each other only by rounding (the order of
additions).  Set ``MIXBOOT_NO_NUMBA=1`` to use numpy even where numba is installed.
"""

from __future__ import annotations

import os

__all__ = ["scatter_cells"]

_KERNELS: dict = {}


def _load():
    if "scatter_cells" in _KERNELS:
        return _KERNELS["scatter_cells"]
    kernel = None
    if os.environ.get("MIXBOOT_NO_NUMBA", "") in ("", "0"):
        try:
            import numba
        except ImportError:
            numba = None
        if numba is not None:

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

    _KERNELS["scatter_cells"] = kernel
    return kernel


def scatter_cells():
    """The compiled cell-sum kernel, or None (numba absent or switched off)."""
    return _load()
