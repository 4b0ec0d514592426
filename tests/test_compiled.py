"""The compiled cell-sum kernel (numba) against the numpy path it stands in for."""

from __future__ import annotations

import numpy as np
import pytest

import mixboot as mb
from mixboot import _compiled
from mixboot.family import get_family
from mixboot.pirls import GlmmWorkspace
from mixboot.spec import build_spec

numba = pytest.importorskip("numba")


def _crossed():
    rng = np.random.default_rng(3)
    d = mb.design.crossed(subjects=12, items=8)
    d["x"] = rng.normal(size=len(d))
    d["y"] = rng.integers(0, 2, size=len(d)).astype(float)
    # shuffle the rows: no grouping is in data order
    return d.sample(frac=1.0, random_state=1).reset_index(drop=True)


@pytest.fixture(params=["crossed", "slopes"])
def workspace(request):
    fam = get_family("binomial")
    formula = {
        "crossed": "y ~ x + (1 | subject) + (1 | item)",
        "slopes": "y ~ x + (1 + x | subject) + (1 | item)",
    }[request.param]
    spec = build_spec(formula, _crossed(), family=fam)
    return GlmmWorkspace(
        spec, fam, prior_weights=spec.prior_weights, trials=spec.trials, offset=spec.offset
    )


@pytest.mark.parametrize("joint", [False, True])
def test_compiled_cell_sums_equal_numpy_and_dense_algebra(workspace, joint, monkeypatch):
    rng = np.random.default_rng(0)
    w, zt = rng.random((5, workspace.n)), rng.normal(size=(5, workspace.n))
    assert _compiled.scatter_cells() is not None
    fast = workspace._system(w, zt, joint)
    monkeypatch.setitem(_compiled._KERNELS, "scatter_cells", None)
    slow = workspace._system(w, zt, joint)
    for a, b in zip(fast[:3], slow[:3]):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    for a, b in zip(fast[3].__dict__.values(), slow[3].__dict__.values()):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    # and both against plain dense algebra: Z1' W Z1 blocks, T' W Z1, T' W T
    ws = workspace
    Z = ws.spec.z_matrix().toarray()
    Z1, T = Z[:, : ws.q1], Z[:, ws.q1 :]
    if joint:
        T = np.hstack([T, ws.spec.X])
    for b in range(2):
        W = np.diag(w[b])
        blocks = (Z1.T @ W @ Z1).reshape(ws.l1, ws.p1, ws.l1, ws.p1)
        np.testing.assert_allclose(fast[0][b], np.einsum("iaib->iab", blocks), atol=1e-10)
        np.testing.assert_allclose(fast[1][b].reshape(T.shape[1], -1), T.T @ W @ Z1, atol=1e-10)
        np.testing.assert_allclose(fast[2][b], T.T @ W @ T, atol=1e-10)
        np.testing.assert_allclose(fast[3].taily[b], T.T @ W @ zt[b], atol=1e-10)


def test_compiled_refits_keep_replicate_bits_and_agree_with_numpy(monkeypatch):
    fit = mb.fit(
        "cbind(incidence, size - incidence) ~ period + (1 | herd)",
        data=mb.datasets.load("cbpp"),
        family="binomial",
    )
    Y = np.ascontiguousarray(mb.simulate(fit, 24, seed=4).T)
    start = np.concatenate([fit.theta, fit.beta])
    whole = fit.model.refit(Y, start=start)
    part = fit.model.refit(Y[:7], start=start)
    np.testing.assert_array_equal(whole.beta[:7], part.beta)
    np.testing.assert_array_equal(whole.theta[:7], part.theta)
    monkeypatch.setitem(_compiled._KERNELS, "scatter_cells", None)
    plain = fit.model.refit(Y, start=start)
    np.testing.assert_allclose(plain.beta, whole.beta, rtol=0, atol=1e-6)
    np.testing.assert_allclose(plain.objective, whole.objective, rtol=1e-9)
