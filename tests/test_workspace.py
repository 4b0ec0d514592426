"""The blocked-Cholesky kernel against plain dense linear algebra.

The reference forms Z, Lambda = blockdiag(I_l (x) T_k), and either the marginal
covariance V0 = I + Z Lambda Lambda' Z' (for the criterion) or the full penalized
system [[Lambda'Z'Z Lambda + I, Lambda'Z'X], [X'Z Lambda, X'X]] (for beta, u and
the penalized residual sum of squares), with slogdet and solve.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.linalg

import mixboot.workspace as wsmod
from conftest import load_data
from mixboot.spec import build_spec
from mixboot.workspace import Workspace

RTOL = 1e-10


# -- the dense reference ----------------------------------------------------------


def dense_lambda(spec, theta):
    blocks = [
        np.kron(np.eye(t.nlevels), t.factor(theta[s]))
        for t, s in zip(spec.terms, spec.theta_slices)
    ]
    return scipy.linalg.block_diag(*blocks)


def dense_criterion(spec, theta, REML):
    """Profiled deviance / REML criterion from the marginal distribution of y."""
    Z = spec.z_matrix().toarray()
    X, y = spec.X, spec.y
    n, p = X.shape
    ZL = Z @ dense_lambda(spec, theta)
    V0 = np.eye(n) + ZL @ ZL.T
    sign, logdet_v = np.linalg.slogdet(V0)
    assert sign > 0
    Vi_X = np.linalg.solve(V0, X)
    Vi_y = np.linalg.solve(V0, y)
    beta = np.linalg.solve(X.T @ Vi_X, X.T @ Vi_y)
    r = y - X @ beta
    rss = r @ np.linalg.solve(V0, r)
    if not REML:
        return logdet_v + n * (1 + np.log(2 * np.pi * rss / n))
    sign, logdet_x = np.linalg.slogdet(X.T @ Vi_X)
    assert sign > 0
    return logdet_v + logdet_x + (n - p) * (1 + np.log(2 * np.pi * rss / (n - p)))


def dense_solution(spec, theta, REML):
    """beta, sigma and spherical u from the full penalized least-squares system."""
    Z = spec.z_matrix().toarray()
    X, y = spec.X, spec.y
    n, p = X.shape
    ZL = Z @ dense_lambda(spec, theta)
    q = ZL.shape[1]
    A = np.block([[ZL.T @ ZL + np.eye(q), ZL.T @ X], [X.T @ ZL, X.T @ X]])
    sol = np.linalg.solve(A, np.concatenate([ZL.T @ y, X.T @ y]))
    u, beta = sol[:q], sol[q:]
    r = y - X @ beta - ZL @ u
    pwrss = r @ r + u @ u
    sigma = np.sqrt(pwrss / (n - p if REML else n))
    return beta, sigma, u


def random_theta(spec, rng):
    """Positive diagonal, off-diagonal of either sign."""
    lower = spec.lower_bounds
    return np.where(
        lower == 0, rng.uniform(0.2, 2.0, spec.n_theta), rng.normal(0.0, 0.5, spec.n_theta)
    )


def split_u(spec, u):
    out, off = [], 0
    for t in spec.terms:
        out.append(u[off : off + t.q].reshape(t.nlevels, t.p))
        off += t.q
    return out


# -- models -------------------------------------------------------------------------


def simulated(seed=11, n=240):
    rng = np.random.default_rng(seed)
    g1 = rng.integers(0, 9, n)
    g2 = rng.integers(0, 6, n)
    x = rng.normal(size=n)
    z = rng.normal(size=n)
    a1, b1 = rng.normal(size=9), rng.normal(size=9)
    a2, b2 = rng.normal(size=6), rng.normal(size=6)
    y = 2 + 0.5 * x - z + a1[g1] + b1[g1] * x + a2[g2] + b2[g2] * x + rng.normal(size=n)
    return pd.DataFrame({"y": y, "x": x, "z": z, "g1": g1, "g2": [f"L{k}" for k in g2]})


MODELS = {
    "sleepstudy_slope": ("sleepstudy", "Reaction ~ 1 + Days + (1 + Days|Subject)"),
    "penicillin_crossed": ("penicillin", "diameter ~ 1 + (1|plate) + (1|sample)"),
    "pastes_nested": ("pastes", "strength ~ 1 + (1|batch/cask)"),
    "two_vector_terms": ("simulated", "y ~ 1 + x + (1 + x|g1) + (1 + x|g2)"),
    "three_wide_term": ("simulated", "y ~ 1 + x + z + (1 + x + z|g1) + (1|g2)"),
    "cake_factor_fixed": ("cake", "angle ~ recipe * temp + (1|recipe:replicate)"),
}


def model_spec(key):
    dataset, formula = MODELS[key]
    data = simulated() if dataset == "simulated" else load_data(dataset)
    return build_spec(formula, data)


@pytest.fixture(scope="module", params=sorted(MODELS))
def spec(request):
    return model_spec(request.param)


@pytest.mark.parametrize("REML", [False, True], ids=["ML", "REML"])
def test_objective_matches_dense_criterion(spec, REML):
    ws = Workspace(spec, REML=REML)
    assert ws.dense
    rng = np.random.default_rng(7)
    for _ in range(3):
        theta = random_theta(spec, rng)
        assert ws.objective(theta) == pytest.approx(
            dense_criterion(spec, theta, REML), rel=RTOL, abs=0
        )


@pytest.mark.parametrize("REML", [False, True], ids=["ML", "REML"])
def test_batch_equals_one_at_a_time(spec, REML):
    ws = Workspace(spec, REML=REML)
    rng = np.random.default_rng(8)
    thetas = np.stack([random_theta(spec, rng) for _ in range(4)])
    batch = ws.factorize(thetas).objective
    single = [ws.objective(t) for t in thetas]
    np.testing.assert_allclose(batch, single, rtol=1e-12, atol=0)


@pytest.mark.parametrize("REML", [False, True], ids=["ML", "REML"])
def test_fixef_sigma_and_modes_match_dense_solve(spec, REML):
    ws = Workspace(spec, REML=REML)
    rng = np.random.default_rng(9)
    for _ in range(2):
        theta = random_theta(spec, rng)
        beta_ref, sigma_ref, u_ref = dense_solution(spec, theta, REML)
        fac = ws.factorize(theta[None, :])
        beta, sigma = ws.fixef_sigma(fac)
        np.testing.assert_allclose(
            beta[0], beta_ref, rtol=1e-8, atol=1e-10 * np.abs(beta_ref).max()
        )
        assert sigma[0] == pytest.approx(sigma_ref, rel=1e-10, abs=0)
        u = ws.conditional_modes(theta, fac, ws.response, beta[0])
        for term, sl, got, want in zip(spec.terms, spec.theta_slices, u, split_u(spec, u_ref)):
            assert got.shape == (term.nlevels, term.p)
            scale = np.abs(want).max()
            np.testing.assert_allclose(got, want, rtol=1e-8, atol=1e-10 * scale)
            T = term.factor(theta[sl])
            np.testing.assert_allclose(got @ T.T, want @ T.T, rtol=1e-8, atol=1e-10 * scale)


def test_objective_is_not_constant_in_theta():
    spec = model_spec("sleepstudy_slope")
    ws = Workspace(spec, REML=False)
    assert ws.objective(np.array([1.0, 0.0, 1.0])) != pytest.approx(
        ws.objective(np.array([0.5, 0.1, 0.2])), rel=1e-6
    )


def test_unsorted_terms_are_put_in_lme4_order():
    # (1|sample) has 6 levels and (1|plate) 24: the workspace's first term is plate.
    spec = build_spec("diameter ~ 1 + (1|sample) + (1|plate)", load_data("penicillin"))
    assert [t.label for t in spec.terms] == ["plate", "sample"]
    ws = Workspace(spec, REML=True)
    assert (ws.l1, ws.p1) == (24, 1)


# -- the sparse single-theta path ------------------------------------------------------


def force_sparse(ws):
    ws.dense = False
    ws.F = None
    ws.K = wsmod._pair_products(ws.F_sparse, ws.l1, ws.p1)
    return ws


SPARSE_MODELS = [
    "sleepstudy_slope",
    "three_wide_term",
    "penicillin_crossed",
    "pastes_nested",
    "cake_factor_fixed",
]


@pytest.mark.parametrize("key", SPARSE_MODELS)
@pytest.mark.parametrize("REML", [False, True], ids=["ML", "REML"])
def test_sparse_path_equals_dense_path(key, REML):
    spec = model_spec(key)
    dense = Workspace(spec, REML=REML)
    sparse = force_sparse(Workspace(spec, REML=REML))
    rng = np.random.default_rng(5)
    for _ in range(3):
        theta = random_theta(spec, rng)
        want = dense.objective(theta)
        assert sparse.objective(theta) == pytest.approx(want, rel=RTOL, abs=0)
        assert want == pytest.approx(dense_criterion(spec, theta, REML), rel=RTOL, abs=0)
        fd, fs = dense.factorize(theta[None, :]), sparse.factorize(theta[None, :])
        (bd, sd), (bs, ss) = dense.fixef_sigma(fd), sparse.fixef_sigma(fs)
        np.testing.assert_allclose(bs, bd, rtol=1e-9, atol=1e-12 * np.abs(bd).max())
        np.testing.assert_allclose(ss, sd, rtol=1e-10, atol=0)
        ud = dense.conditional_modes(theta, fd, dense.response, bd[0])
        us = sparse.conditional_modes(theta, fs, sparse.response, bs[0])
        for a, b in zip(us, ud):
            np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-10 * np.abs(b).max())
        np.testing.assert_allclose(sparse.vcov_unscaled(fs), dense.vcov_unscaled(fd), rtol=1e-9)


@pytest.mark.parametrize("REML", [False, True], ids=["ML", "REML"])
def test_sparse_path_with_a_later_vector_term(REML):
    spec = model_spec("two_vector_terms")
    sparse = force_sparse(Workspace(spec, REML=REML))
    theta = random_theta(spec, np.random.default_rng(5))
    assert sparse.objective(theta) == pytest.approx(
        dense_criterion(spec, theta, REML), rel=RTOL, abs=0
    )


def test_sparse_path_refuses_a_batch():
    spec = model_spec("sleepstudy_slope")
    ws = force_sparse(Workspace(spec, REML=False))
    thetas = np.stack([spec.theta_start, spec.theta_start])
    with pytest.raises(ValueError, match="one theta"):
        ws.factorize(thetas)


def test_pair_products_reproduce_f_p_ft():
    spec = model_spec("sleepstudy_slope")
    ws = Workspace(spec, REML=False)
    rng = np.random.default_rng(3)
    P = rng.normal(size=(ws.l1, ws.p1, ws.p1))
    P = P + np.swapaxes(P, 1, 2)
    K = wsmod._pair_products(ws.F_sparse, ws.l1, ws.p1)
    got = (K @ P.reshape(-1)).reshape(ws.m0, ws.m0)
    F = ws.F_sparse.toarray()
    want = F @ scipy.linalg.block_diag(*P) @ F.T
    np.testing.assert_allclose(np.tril(got), np.tril(want), rtol=1e-12, atol=1e-9)
    assert np.count_nonzero(np.triu(got, 1)) == 0
