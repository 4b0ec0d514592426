"""The fast paths of small-model refits against the paths they stand in for.

* :mod:`mixboot.grouped` (the criterion by groups of equal first-term blocks)
  against :meth:`Workspace.factorize`, with and without the compiled kernel, the
  two paths bit for bit equal and a point's value independent of its call mates;
* the batched Cholesky Newton direction and the written-out finite differences
  of :mod:`mixboot.newton` against the eigendecomposition and the weight matrix.
"""

from __future__ import annotations

import numpy as np
import pytest

import mixboot as mb
from conftest import load_data
from mixboot import _compiled, grouped, newton
from mixboot.refit import _evaluator, refit_responses


def _model(name: str, formula: str, REML: bool = False, drop: int = 0):
    data = load_data(name)
    if drop:
        # unbalanced: drop rows so that the first term's blocks differ by level
        data = data.drop(index=data.index[::drop]).reset_index(drop=True)
    return mb.fit(formula, data, REML=REML)


CASES = {
    "sleepstudy": ("sleepstudy", "Reaction ~ 1 + Days + (1 + Days|Subject)", False, 0),
    "penicillin": ("penicillin", "diameter ~ 1 + (1|plate) + (1|sample)", True, 0),
    "dyestuff": ("dyestuff", "Yield ~ 1 + (1|Batch)", False, 0),
    "sleepstudy_unbalanced": ("sleepstudy", "Reaction ~ 1 + Days + (1 + Days|Subject)", True, 7),
    "penicillin_unbalanced": ("penicillin", "diameter ~ 1 + (1|plate) + (1|sample)", False, 5),
}


def _points(result, n_rep: int, n: int, seed: int = 0):
    ws = result.model.workspace
    resp = ws.responses(mb.simulate(result, nsim=n_rep, seed=seed))
    rng = np.random.default_rng(seed)
    theta = np.asarray(result.theta)[None, :] * (1.0 + 0.4 * rng.standard_normal((n, ws.n_theta)))
    theta[:3] = np.array([0.0, -2.0, 50.0])[:, None]  # zero, negative and large elements
    return ws, resp, theta, rng.integers(0, n_rep, n)


def _needs_kernels() -> None:
    pytest.importorskip("numba")
    if _compiled.grouped_objective() is None:
        pytest.skip("compiled kernels switched off (MIXBOOT_NO_NUMBA)")


@pytest.fixture(params=sorted(CASES))
def case(request):
    return _model(*CASES[request.param])


@pytest.fixture
def no_numba(monkeypatch):
    monkeypatch.setitem(_compiled._KERNELS, "grouped_objective", None)


def test_grouped_criterion_matches_the_workspace(case):
    ws, resp, theta, which = _points(case, 12, 300)
    evaluate = grouped.grouped_evaluator(ws, resp)
    assert evaluate is not None
    assert (evaluate.kernel is None) == (_compiled.grouped_objective() is None)
    fast = evaluate(theta, which)
    slow = ws.factorize(theta, resp.take(which)).objective
    assert np.all(np.isfinite(fast))
    np.testing.assert_allclose(fast, slow, rtol=1e-11, atol=0)


def test_grouped_numpy_path_matches_the_workspace(case, no_numba):
    ws, resp, theta, which = _points(case, 12, 300, seed=1)
    evaluate = grouped.grouped_evaluator(ws, resp)
    assert evaluate.kernel is None
    slow = ws.factorize(theta, resp.take(which)).objective
    np.testing.assert_allclose(evaluate(theta, which), slow, rtol=1e-11, atol=0)


def test_compiled_grouped_kernel_equals_numpy_bit_for_bit(case):
    _needs_kernels()
    ws, resp, theta, which = _points(case, 12, 300, seed=2)
    evaluate = grouped.grouped_evaluator(ws, resp)
    assert evaluate.kernel is not None
    fast = evaluate(theta, which)
    evaluate.kernel = None
    np.testing.assert_array_equal(fast, evaluate(theta, which))


@pytest.mark.parametrize("compiled", [True, False])
def test_grouped_point_does_not_depend_on_its_call_mates(compiled, monkeypatch):
    if not compiled:
        monkeypatch.setitem(_compiled._KERNELS, "grouped_objective", None)
    result = _model(*CASES["penicillin"])
    ws, resp, theta, which = _points(result, 12, 3000, seed=3)
    evaluate = grouped.grouped_evaluator(ws, resp)
    full = evaluate(theta, which)
    alone = np.concatenate(
        [evaluate(theta[i : i + 1], which[i : i + 1]) for i in range(0, 3000, 97)]
    )
    np.testing.assert_array_equal(alone, full[::97])
    part = evaluate(theta[5:40], which[5:40])
    np.testing.assert_array_equal(part, full[5:40])


def test_grouped_wide_rest_and_first_terms_use_numpy_and_match():
    """A 2-wide rest term (its scaling mixes rows) and a 3-wide first term."""
    rng = np.random.default_rng(4)
    d = mb.design.crossed(subjects=10, items=4)
    # covariates by item: every subject's block of Z1'Z1 is the same (one group)
    item = d["item"].cat.codes.to_numpy()
    d["x"] = rng.normal(size=4)[item]
    d["z"] = rng.normal(size=4)[item]
    d["y"] = rng.normal(size=len(d))
    for formula in ["y ~ x + (1 | subject) + (1 + x | item)", "y ~ x + (1 + x + z | subject)"]:
        result = mb.fit(formula, d, REML=False)
        ws, resp, theta, which = _points(result, 5, 200, seed=5)
        evaluate = grouped.grouped_evaluator(ws, resp)
        assert evaluate is not None and evaluate.kernel is None
        slow = ws.factorize(theta, resp.take(which)).objective
        np.testing.assert_allclose(evaluate(theta, which), slow, rtol=1e-11, atol=0)


def test_many_groups_fall_back_to_the_workspace(monkeypatch):
    result = _model(*CASES["sleepstudy_unbalanced"])
    ws = result.model.workspace
    _, ng = grouped.level_groups(ws)
    assert ng > 1
    monkeypatch.setattr(grouped, "MAX_K", 3 * ng - 1)
    resp = ws.responses(mb.simulate(result, nsim=2, seed=0))
    assert grouped.grouped_evaluator(ws, resp) is None
    assert not isinstance(_evaluator(ws, resp), grouped.GroupedCriterion)


def test_refits_with_and_without_the_kernel_agree(monkeypatch):
    _needs_kernels()
    result = _model(*CASES["sleepstudy"])
    Y = mb.simulate(result, nsim=30, seed=11)
    fast = refit_responses(result.model, Y, start=result.theta)
    monkeypatch.setitem(_compiled._KERNELS, "grouped_objective", None)
    slow = refit_responses(result.model, Y, start=result.theta)
    # the criterion agrees bit for bit; Newton's iterates wherever no eigendecomposition
    # was needed (LAPACK's in numpy and numba's may round differently)
    assert np.all(fast.theta == slow.theta, axis=1).mean() > 0.8
    np.testing.assert_allclose(fast.theta, slow.theta, rtol=0, atol=1e-5)
    np.testing.assert_allclose(fast.objective, slow.objective, rtol=1e-12, atol=0)
    np.testing.assert_array_equal(fast.converged, slow.converged)


@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_cholesky_direction_matches_eigen_direction(k):
    rng = np.random.default_rng(k)
    A = rng.standard_normal((200, k, k))
    H = A @ np.swapaxes(A, 1, 2) + 0.1 * np.eye(k)
    H[:30] -= 4.0 * np.eye(k)  # indefinite: the eigen path
    H[30] = 0.0  # singular
    g = rng.standard_normal((200, k))
    d = newton._direction(g, H)
    ref = newton._eigen_direction(g, H)
    ref *= np.minimum(1.0, newton.MAX_STEP / np.abs(ref).max(axis=1, keepdims=True))
    np.testing.assert_allclose(d, ref, rtol=1e-9, atol=1e-12)
    _, ok = newton._cholesky_solve(H, -g)
    assert not ok[30] and ok[30:].sum() > 100
    # a problem's direction does not depend on its batch mates
    np.testing.assert_array_equal(newton._direction(g[40:47], H[40:47]), d[40:47])


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_written_out_differences_match_the_weight_matrix(k):
    rng = np.random.default_rng(10 + k)
    npts = newton.stencil(k).shape[0]
    fv = 100.0 + rng.standard_normal((50, npts))
    h = 1e-2 * (1.0 + rng.random((50, k)))
    W = newton._difference_weights(k)
    scale = np.concatenate([2.0 * h, (h[:, :, None] * h[:, None, :]).reshape(-1, k * k)], axis=1)
    ref = (fv @ W) / scale
    g, H = newton._differences(fv, h)
    np.testing.assert_allclose(g, ref[:, :k], rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(H.reshape(50, -1), ref[:, k:], rtol=1e-12, atol=1e-7)
    np.testing.assert_array_equal(H, np.swapaxes(H, 1, 2))


@pytest.mark.parametrize("name", ["sleepstudy", "penicillin", "dyestuff", "sleepstudy_unbalanced"])
def test_compiled_newton_matches_numpy_newton(name):
    _needs_kernels()
    result = _model(*CASES[name])
    ws = result.model.workspace
    resp = ws.responses(mb.simulate(result, nsim=60, seed=21))
    evaluate = grouped.grouped_evaluator(ws, resp)
    assert evaluate.newton_kernel is not None
    theta0 = np.tile(np.asarray(result.theta, dtype=float), (60, 1))
    H_fast = np.empty((60, ws.n_theta, ws.n_theta))
    fast = newton.newton_batch(evaluate, theta0, ftol_rel=1e-12, hessian_out=H_fast)
    alone = newton.newton_batch(evaluate, theta0[:7], ftol_rel=1e-12)
    evaluate.newton_kernel = None  # the numpy iterations (same points, same criterion)
    H_slow = np.empty_like(H_fast)
    slow = newton.newton_batch(evaluate, theta0, ftol_rel=1e-12, hessian_out=H_slow)
    np.testing.assert_array_equal(fast[2], slow[2])  # converged
    np.testing.assert_array_equal(fast[3], slow[3])  # evaluations
    # bit for bit wherever no eigendecomposition was needed; close everywhere
    assert np.all(fast[0] == slow[0], axis=1).mean() > 0.8
    np.testing.assert_allclose(fast[0], slow[0], rtol=0, atol=1e-5)
    np.testing.assert_allclose(fast[1], slow[1], rtol=1e-12, atol=0)
    np.testing.assert_array_equal(np.isnan(H_fast), np.isnan(H_slow))
    # a problem's iterations do not depend on its batch mates
    for a, b in zip(alone, fast):
        np.testing.assert_array_equal(a, b[:7])


def test_compiled_newton_respects_max_evals():
    _needs_kernels()
    result = _model(*CASES["sleepstudy"])
    ws = result.model.workspace
    resp = ws.responses(mb.simulate(result, nsim=10, seed=2))
    evaluate = grouped.grouped_evaluator(ws, resp)
    theta0 = np.tile(np.asarray(result.theta, dtype=float), (10, 1))
    theta, f, conv, evals = newton.newton_batch(evaluate, theta0, ftol_rel=1e-12, max_evals=25)
    assert not conv.any() and (evals <= 25 + 10 + 11).all()
    evaluate.newton_kernel = None
    ref = newton.newton_batch(evaluate, theta0, ftol_rel=1e-12, max_evals=25)
    np.testing.assert_array_equal(evals, ref[3])
    np.testing.assert_allclose(theta, ref[0], rtol=0, atol=1e-8)


def test_grouped_precomputation_does_not_depend_on_the_other_responses():
    result = _model(*CASES["sleepstudy_unbalanced"])
    ws, resp, theta, which = _points(result, 12, 200, seed=6)
    full = grouped.grouped_evaluator(ws, resp)
    subset = np.array([3, 4, 9])
    part = grouped.grouped_evaluator(ws, resp.take(subset))
    np.testing.assert_array_equal(part.Qy, full.Qy[:, :, subset])
    rows = np.isin(which, subset)
    local = np.searchsorted(subset, which[rows])
    np.testing.assert_array_equal(part(theta[rows], local), full(theta[rows], which[rows]))
