"""Bootstraps of large (sparse-workspace) models: one refit per replicate, warm-started
quasi-Newton refits at the tight optimum, and n_jobs=2 giving n_jobs=1's bits.

The models are small ones forced onto the sparse single-theta path by a tiny
``mixboot.workspace._DENSE_LIMIT``, so that the tests are fast.
"""

from __future__ import annotations

import numpy as np
import pytest

import mixboot as mb
from mixboot import optimize, refit, runner
from mixboot import workspace as wsmod
from mixboot.newton import stencil
from mixboot.optimize import OptSummary, minimize_batch, newton_single
from mixboot.simulate import simulate_block

MODELS = {
    "reaction": "Reaction ~ 1 + Days + (1 + Days | Subject)",
    # two crossed scalar terms: the sparse path's tail holds the second one
    "crossed": "diameter ~ 1 + (1 | plate) + (1 | sample)",
}


def _fit(key: str, *, sparse: bool):
    data = mb.datasets.load(key)
    if sparse:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(wsmod, "_DENSE_LIMIT", 1)
            fit = mb.fit(MODELS[key], data, REML=False)
        assert not fit.model.workspace.dense
        return fit
    fit = mb.fit(MODELS[key], data, REML=False)
    assert fit.model.workspace.dense
    return fit


@pytest.fixture(scope="module", params=sorted(MODELS))
def pair(request):
    """(sparse fit, dense fit) of the same model."""
    return _fit(request.param, sparse=True), _fit(request.param, sparse=False)


def _responses(fit, B: int, seed: int = 7) -> np.ndarray:
    _, children = runner.seed_streams(seed, B)
    return simulate_block(fit.spec, children, beta=fit.beta, sigma=fit.sigma, theta=fit.theta)


# --------------------------------------------------------------------------- one refit each
def test_each_replicate_is_refitted_once(pair, monkeypatch):
    """Criterion evaluations of a sparse bootstrap: the replicates' own, one final
    factorization each, and the fit's Hessian stencil once; no second refit."""
    fit = pair[0]
    refit._HESSIANS.pop(fit.model.workspace, None)
    calls = {"factorize": 0, "refit": []}
    factorize = wsmod.Workspace.factorize
    refit_responses = refit.refit_responses

    def counting_factorize(self, *args, **kwargs):
        calls["factorize"] += 1
        return factorize(self, *args, **kwargs)

    def counting_refit(model, Y, **kwargs):
        calls["refit"].append(np.asarray(Y).shape[1])
        return refit_responses(model, Y, **kwargs)

    monkeypatch.setattr(wsmod.Workspace, "factorize", counting_factorize)
    monkeypatch.setattr(refit, "refit_responses", counting_refit)
    B = 5
    boot = mb.bootMer(fit, B=B, seed=3)
    evaluations = boot.diagnostics["evaluations"].to_numpy()
    assert boot.diagnostics["converged"].all()
    # one refit call per replicate, one column each: no batch attempt, no second pass
    assert calls["refit"] == [1] * B
    # evaluations + a final factorization per replicate + the Hessian stencil once,
    # + at most one try at zero per bounded theta element (not counted as evaluations)
    least = evaluations.sum() + B + stencil(fit.spec.n_theta).shape[0]
    assert least <= calls["factorize"] <= least + B * fit.spec.n_theta


# --------------------------------------------------------------------------- accuracy
def test_sparse_refits_reach_the_tight_optimum(pair):
    """Each quasi-Newton refit on the sparse path ends at the optimum of a tight dense
    refit (batched Newton) and of a cold BOBYQA refit (1e-7 relative in the criterion),
    in fewer evaluations than BOBYQA."""
    sparse, dense = pair
    Y = _responses(sparse, 8)
    got = refit.refit_responses(sparse.model, Y, start=sparse.theta)
    want = refit.refit_responses(dense.model, Y, start=dense.theta, tol=1e-14)
    assert got.converged.all()
    ws = sparse.model.workspace
    bobyqa_evaluations = 0
    for j in range(Y.shape[1]):
        evaluate = refit._evaluator(ws, ws.responses(Y[:, j : j + 1]))
        bob = optimize.minimize_theta(
            lambda th, evaluate=evaluate: float(evaluate(th[None], np.zeros(1, int))[0]),
            sparse.theta,
            sparse.spec.lower_bounds,
            OptSummary(),
            warn=False,
        )
        bobyqa_evaluations += bob.evaluations
        best = min(bob.fmin, want.objective[j])
        assert got.objective[j] - best <= 1e-7 * max(1.0, abs(best))
        assert abs(got.objective[j] - want.objective[j]) <= 1e-7 * abs(best)
    np.testing.assert_allclose(got.theta, want.theta, rtol=0, atol=1e-3)
    np.testing.assert_allclose(got.beta, want.beta, rtol=1e-5)
    assert got.evaluations.sum() < bobyqa_evaluations


def test_hessian_is_computed_once_per_workspace_and_start(pair, monkeypatch):
    fit = pair[0]
    ws = fit.model.workspace
    refit._HESSIANS.pop(ws, None)
    n = {"calls": 0}
    real = refit.fd_derivatives

    def counting(*args, **kwargs):
        n["calls"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(refit, "fd_derivatives", counting)
    Y = _responses(fit, 3)
    refit.refit_responses(fit.model, Y, start=fit.theta)
    refit.refit_responses(fit.model, Y[:, :1], start=fit.theta)
    assert n["calls"] == 1
    H = refit.start_hessian(ws, fit.theta)
    assert np.all(np.linalg.eigvalsh(H) > 0)  # at the fit's optimum


# --------------------------------------------------------------------------- the policy
def test_newton_single_converges_with_a_rough_hessian():
    """A smooth non-quadratic criterion, the Hessian off by factors of 3 and rotated."""
    center = np.array([0.3, 1.2, -0.5])
    A = np.array([[4.0, 1.0, 0.0], [1.0, 3.0, 0.5], [0.0, 0.5, 2.0]]) * 1e3

    def f(x):
        z = x - center
        return 1e5 + z @ A @ z / 2 + 50.0 * (z**4).sum() + 20.0 * z[0] ** 3

    def evaluate(th):
        return np.array([f(row) for row in th])

    rough = np.diag([3.0, 1.0 / 3.0, 2.0]) @ A @ np.diag([3.0, 1.0 / 3.0, 2.0])
    x, fx, converged, evals = newton_single(
        evaluate, center + [0.05, -0.04, 0.03], rough, ftol_rel=1e-12, max_evals=1000
    )
    assert converged
    assert fx - 1e5 <= 1e-6
    np.testing.assert_allclose(x, center, atol=1e-4)
    assert evals < 60


def test_stalled_single_newton_falls_back_to_bobyqa():
    """Where the quasi-Newton search cannot go on (here: the criterion is NaN at its
    difference points), BOBYQA takes over from the best point."""
    seen: list[np.ndarray] = []

    def evaluate(th, which):
        seen.append(th.copy())
        x = th[:, 0]
        out = (x - 0.4) ** 2 + 10.0
        # NaN on a thin grid the forward differences from the start hit
        out[np.abs(x - 1.0 - 1e-4) < 1e-9] = np.nan
        return out

    opt = minimize_batch(
        evaluate,
        np.array([[1.0]]),
        np.array([0.0]),
        OptSummary(),
        canonical=lambda t: np.abs(t),
        newton=False,
        hessian=np.array([[2.0]]),
    )
    assert opt.method == ("quasi-newton+LN_BOBYQA",)
    assert opt.converged[0]
    np.testing.assert_allclose(opt.theta[0], [0.4], atol=1e-5)


def test_failing_column_is_not_refitted_with_the_others(pair, monkeypatch):
    """A large model's columns are refitted one by one: a column that raises is
    reported, and the other columns are refitted exactly once."""
    fit = pair[0]
    Y = _responses(fit, 4)
    Y[:, 2] = np.nan
    seen: list[int] = []
    real = refit.refit_responses

    def counting(model, Yc, **kwargs):
        seen.append(Yc.shape[1])
        out = real(model, Yc, **kwargs)
        if not np.isfinite(out.objective).all():
            raise FloatingPointError("non-finite response")
        return out

    monkeypatch.setattr(refit, "refit_responses", counting)
    failed: list[int] = []
    batches = refit.refit_isolated(
        fit.model, Y, start=fit.theta, tol=None, fail=lambda i, exc: failed.append(i)
    )
    assert seen == [1, 1, 1, 1]
    assert failed == [2]
    assert [int(i[0]) for i, _ in batches] == [0, 1, 3]


def test_non_finite_hessian_means_bobyqa():
    opt = minimize_batch(
        lambda th, which: (th[:, 0] - 0.4) ** 2 + 1.0,
        np.array([[1.0]]),
        np.array([0.0]),
        OptSummary(),
        canonical=np.abs,
        newton=False,
        hessian=np.array([[np.nan]]),
    )
    assert opt.method == ("LN_BOBYQA",)
    np.testing.assert_allclose(opt.theta[0], [0.4], atol=1e-5)


def test_dense_models_keep_the_batched_newton(pair):
    """A Hessian argument does not change the dense (batched Newton) path."""
    dense = pair[1]
    ws = dense.model.workspace
    Y = _responses(dense, 4)
    resp = ws.responses(Y)
    evaluate = refit._evaluator(ws, resp)
    theta0 = np.broadcast_to(dense.theta, (4, dense.spec.n_theta))
    kwargs = {"canonical": dense.spec.canonical_theta, "newton": True}
    a = minimize_batch(evaluate, theta0, dense.spec.lower_bounds, OptSummary(), **kwargs)
    b = minimize_batch(
        evaluate,
        theta0,
        dense.spec.lower_bounds,
        OptSummary(),
        hessian=np.eye(dense.spec.n_theta),
        **kwargs,
    )
    assert a.theta.tobytes() == b.theta.tobytes()
    assert set(a.method) <= {"newton", "newton+LN_BOBYQA"}


# --------------------------------------------------------------------------- parallel
def test_two_processes_give_the_bits_of_one(pair, monkeypatch):
    fit = pair[0]
    one = mb.bootMer(fit, B=6, seed=11)
    used = {"processes": 0}
    real = runner._run_processes

    def spy(job, todo, n_workers, root, finished):
        used["processes"] = n_workers
        return real(job, todo, n_workers, root, finished)

    monkeypatch.setattr(runner, "_run_processes", spy)
    monkeypatch.setattr(runner, "PARALLEL_MIN_SECONDS", 0.0)
    two = mb.bootMer(fit, B=6, seed=11, n_jobs=2)
    assert used["processes"] == 2
    assert one.estimates.tobytes() == two.estimates.tobytes()
    assert (
        one.diagnostics["evaluations"].to_numpy() == two.diagnostics["evaluations"].to_numpy()
    ).all()
