"""The sparse (CHOLMOD) single-theta tail, for tails too wide for a dense buffer.

A large model whose dense tail would exceed the memory limit has its random-effect
block S_rr factored by scikit-sparse's CHOLMOD and the [X y] columns by a dense Schur
complement (:class:`mixboot.tail.SparseTail`).  ``MIXBOOT_TAIL=sparse`` forces it on
here.  These tests compare it with the dense paths (InstEval's crossed model, and
small models with a vector term in the tail), check the size rule's choice, and that
the memory error names the extra to install when scikit-sparse is missing.  Tests
that factor sparsely are skipped when scikit-sparse is not installed.
"""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg

import mixboot as mb
import mixboot.tail as tailmod
import mixboot.workspace as wsmod
from conftest import load_data
from mixboot.result import build_result
from mixboot.spec import build_spec
from mixboot.workspace import Workspace

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_large import CASES, assert_same_estimates, thetas  # noqa: E402

INSTEVAL = "y ~ 1 + service + (1|s) + (1|d) + (1|dept:service)"


@pytest.fixture
def cholmod():
    return pytest.importorskip("sksparse.cholmod")


@pytest.fixture(scope="module")
def insteval():
    return load_data("insteval")


def both_tails(spec, REML, monkeypatch):
    """(dense, sparse) single-theta workspaces of one model."""
    monkeypatch.setenv("MIXBOOT_TAIL", "dense")
    dense = Workspace(spec, REML=REML)
    monkeypatch.setenv("MIXBOOT_TAIL", "sparse")
    sparse = Workspace(spec, REML=REML)
    assert dense.tail_kind == "dense" and sparse.tail_kind == "sparse"
    return dense, sparse


def assert_same_evaluation(dense, sparse, theta, rel):
    fd, fs = dense.factorize(theta[None]), sparse.factorize(theta[None])
    assert fs.rr is not None and fd.rr is None and fs.ok[0]
    assert fs.objective[0] == pytest.approx(fd.objective[0], rel=rel, abs=0)
    # the [X y] block of the factor is the dense factor's trailing block
    qr = dense.qr
    np.testing.assert_allclose(fs.L[0], np.tril(fd.L[0][qr:, qr:]), rtol=1e-9, atol=1e-12)
    # the diagonal: L_rr's in CHOLMOD's order, the same log-sum
    dd, ds = fd.diagonal(), fs.diagonal()
    assert ds.shape == dd.shape
    assert np.log(ds[0, :qr]).sum() == pytest.approx(np.log(dd[0, :qr]).sum(), rel=1e-11)
    assert 2 * np.log(ds[0, :qr]).sum() == pytest.approx(fs.rr.logdet, rel=1e-11)
    assert_same_estimates(theta, dense, fd, sparse, fs)


# -- InstEval --------------------------------------------------------------------------


@pytest.mark.parametrize("REML", [False, True], ids=["ML", "REML"])
def test_insteval_sparse_tail_evaluates_as_the_dense_one(cholmod, insteval, REML, monkeypatch):
    spec = build_spec(INSTEVAL, insteval)
    dense, sparse = both_tails(spec, REML, monkeypatch)
    assert not sparse.dense and sparse.qr == dense.qr > 1000
    for theta in ([0.5, 0.4, 0.3], [0.3, 0.2, 0.1], [1.0, 1.5, 0.05]):
        assert_same_evaluation(dense, sparse, np.array(theta), rel=1e-9)


def test_insteval_fit_on_the_sparse_tail(cholmod, insteval, monkeypatch):
    monkeypatch.setenv("MIXBOOT_TAIL", "dense")
    want = mb.fit(INSTEVAL, insteval, REML=False)
    monkeypatch.setenv("MIXBOOT_TAIL", "sparse")
    got = mb.fit(INSTEVAL, insteval, REML=False)
    assert want.model.workspace.tail_kind == "dense"
    assert got.model.workspace.tail_kind == "sparse"
    # BOBYQA's path follows the objective's last bits: the optima agree to the
    # objective's precision, theta (dept:service's is poorly determined) to its tolerance.
    assert got.objective == pytest.approx(want.objective, rel=1e-10, abs=0)
    np.testing.assert_allclose(got.theta, want.theta, rtol=1e-3)
    np.testing.assert_allclose(got.beta, want.beta, rtol=1e-4)
    # every estimate at the same theta, through the sparse factor
    at = build_result(got.model, want.theta, want.optsum)
    assert at.objective == pytest.approx(want.objective, rel=1e-12, abs=0)
    assert at.loglik == pytest.approx(want.loglik, rel=1e-12)
    assert at.logdet_z == pytest.approx(want.logdet_z, rel=1e-11)
    assert at.pwrss == pytest.approx(want.pwrss, rel=1e-11)
    np.testing.assert_allclose(at.beta, want.beta, rtol=1e-10)
    assert at.sigma == pytest.approx(want.sigma, rel=1e-11)
    np.testing.assert_allclose(at.vcov_unscaled, want.vcov_unscaled, rtol=1e-9)
    for name, frame in want.ranef.items():
        b = frame.to_numpy()
        np.testing.assert_allclose(
            at.ranef[name].to_numpy(), b, rtol=1e-8, atol=1e-10 * np.abs(b).max()
        )


# -- small models, vector terms in the tail --------------------------------------------


@pytest.mark.parametrize("key", ["penicillin", "vector_then_scalar", "scalar_then_vector"])
@pytest.mark.parametrize("REML", [False, True], ids=["ML", "REML"])
def test_sparse_tail_equals_the_batched_path(cholmod, key, REML, monkeypatch):
    load, formula = CASES[key]
    spec = build_spec(formula, load())
    batched = Workspace(spec, REML=REML)
    monkeypatch.setattr(wsmod, "_DENSE_LIMIT", 0)
    dense, sparse = both_tails(spec, REML, monkeypatch)
    assert batched.dense and not sparse.dense
    for theta in thetas(spec, np.random.default_rng(11)):
        assert_same_evaluation(dense, sparse, theta, rel=1e-10)
        fb, fs = batched.factorize(theta[None]), sparse.factorize(theta[None])
        assert fs.objective[0] == pytest.approx(fb.objective[0], rel=1e-10, abs=0)


def test_fit_with_a_vector_tail_term_on_the_sparse_tail(cholmod, monkeypatch):
    load, formula = CASES["vector_then_scalar"]
    data = load()
    want = mb.fit(formula, data, REML=False)
    monkeypatch.setattr(wsmod, "_DENSE_LIMIT", 0)
    monkeypatch.setenv("MIXBOOT_TAIL", "sparse")
    got = mb.fit(formula, data, REML=False)
    assert got.model.workspace.tail_kind == "sparse" and want.model.workspace.dense
    assert any(t.p > 1 for t in got.model.workspace.rest)
    assert got.objective == pytest.approx(want.objective, rel=1e-10, abs=0)
    np.testing.assert_allclose(got.theta, want.theta, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(got.beta, want.beta, rtol=1e-4, atol=1e-6)


def test_sparse_tail_reports_a_failed_factorization(cholmod, monkeypatch):
    load, formula = CASES["vector_then_scalar"]
    spec = build_spec(formula, load())
    monkeypatch.setattr(wsmod, "_DENSE_LIMIT", 0)
    _, sparse = both_tails(spec, False, monkeypatch)
    theta = next(thetas(spec, np.random.default_rng(2)))
    sparse.factorize(theta[None])
    _, _, P = sparse._term1(theta[None])
    resp = sparse.response
    # S_rr = Lt'(A22 - R P R')Lt + I is indefinite once P is blown up
    Lb, rr, ok = sparse._single.factor(
        theta, 1e6 * P[0], resp.z1y[0], resp.taily[0], float(resp.yty[0])
    )
    assert not ok and rr.factor is None and np.isnan(Lb).all()
    assert np.isnan(rr.diagonal()).all() and rr.diagonal().shape == (sparse.qr,)


def test_sparse_workspace_and_factorization_pickle(cholmod, monkeypatch):
    load, formula = CASES["penicillin"]
    spec = build_spec(formula, load())
    monkeypatch.setattr(wsmod, "_DENSE_LIMIT", 0)
    _, sparse = both_tails(spec, False, monkeypatch)
    theta = np.array([1.3, 0.8])
    fac = sparse.factorize(theta[None])
    copy = pickle.loads(pickle.dumps(sparse))
    assert copy._single._symbolic is None
    again = copy.factorize(theta[None])
    assert again.objective[0] == fac.objective[0]
    fac2 = pickle.loads(pickle.dumps(fac))
    np.testing.assert_array_equal(fac2.diagonal(), fac.diagonal())


# -- the size rule ---------------------------------------------------------------------


def test_size_rule_picks_the_sparse_tail_above_the_limit(cholmod, monkeypatch):
    load, formula = CASES["penicillin"]
    spec = build_spec(formula, load())
    monkeypatch.setattr(wsmod, "_DENSE_LIMIT", 0)
    monkeypatch.delenv("MIXBOOT_TAIL", raising=False)
    m = 6 + 1 + 1
    monkeypatch.setenv("MIXBOOT_TAIL_MEMORY", str(8 * m * m))
    assert Workspace(spec, REML=False).tail_kind == "dense"
    monkeypatch.setenv("MIXBOOT_TAIL_MEMORY", str(8 * m * m - 1))
    assert Workspace(spec, REML=False).tail_kind == "sparse"
    assert tailmod.tail_kind(30_000) == "sparse"
    # forced dense: refused above the limit, the message pointing at the sparse tail
    monkeypatch.setenv("MIXBOOT_TAIL", "dense")
    with pytest.raises(tailmod.TailMemoryError, match="MIXBOOT_TAIL=sparse"):
        Workspace(spec, REML=False)
    # forced sparse: even below the limit
    monkeypatch.setenv("MIXBOOT_TAIL_MEMORY", "1G")
    monkeypatch.setenv("MIXBOOT_TAIL", "sparse")
    assert Workspace(spec, REML=False).tail_kind == "sparse"
    # the batched path never consults the rule
    monkeypatch.setattr(wsmod, "_DENSE_LIMIT", 400_000)
    assert Workspace(spec, REML=False).tail_kind == "batched"


def test_a_tail_without_random_effect_columns_stays_dense(monkeypatch):
    monkeypatch.setenv("MIXBOOT_TAIL", "sparse")
    monkeypatch.setenv("MIXBOOT_TAIL_MEMORY", "1G")
    assert tailmod.tail_kind(3, sparse_possible=False) == "dense"
    monkeypatch.setenv("MIXBOOT_TAIL_MEMORY", "1")
    monkeypatch.setattr(tailmod, "sparse_available", lambda: True)
    with pytest.raises(tailmod.TailMemoryError):
        tailmod.tail_kind(3, sparse_possible=False)


@pytest.mark.parametrize("raw", ["cholmod", "1"])
def test_tail_setting_is_checked(monkeypatch, raw):
    monkeypatch.setenv("MIXBOOT_TAIL", raw)
    with pytest.raises(ValueError, match="MIXBOOT_TAIL must be one of auto, dense, sparse"):
        tailmod.tail_kind(10)


def test_missing_sksparse_error_names_the_extra(monkeypatch):
    # an import of a module mapped to None raises ImportError
    monkeypatch.setitem(sys.modules, "sksparse", None)
    monkeypatch.setitem(sys.modules, "sksparse.cholmod", None)
    assert not tailmod.sparse_available()
    monkeypatch.delenv("MIXBOOT_TAIL", raising=False)
    monkeypatch.setenv("MIXBOOT_TAIL_MEMORY", "2G")
    with pytest.raises(tailmod.TailMemoryError) as err:
        tailmod.tail_kind(30_000)
    text = str(err.value)
    assert "30000 x 30000" in text and "6.71 GiB" in text
    assert 'pip install "mixboot[sparse]"' in text and "libsuitesparse-dev" in text
    monkeypatch.setenv("MIXBOOT_TAIL", "sparse")
    with pytest.raises(ImportError, match=r"MIXBOOT_TAIL=sparse.*mixboot\[sparse\]"):
        tailmod.tail_kind(10)
    # and through a workspace
    load, formula = CASES["penicillin"]
    spec = build_spec(formula, load())
    monkeypatch.setattr(wsmod, "_DENSE_LIMIT", 0)
    monkeypatch.setenv("MIXBOOT_TAIL", "auto")
    monkeypatch.setenv("MIXBOOT_TAIL_MEMORY", "1")
    with pytest.raises(MemoryError, match=r"mixboot\[sparse\]"):
        Workspace(spec, REML=False)


# -- the dense path's conditional modes: no copy of L_rr ------------------------------


def test_leading_block_solve_reads_the_buffer_in_place():
    rng = np.random.default_rng(5)
    m, n = 40, 31
    A = rng.normal(size=(m, m))
    L = np.asfortranarray(np.linalg.cholesky(A @ A.T + m * np.eye(m)))
    L[np.triu_indices(m, 1)] = rng.normal(size=m * (m - 1) // 2)  # junk, never read
    b = rng.normal(size=n)
    want = scipy.linalg.solve_triangular(L[:n, :n].T, b, lower=False, check_finite=False)
    got = wsmod._solve_leading_lower_t(L, b)
    np.testing.assert_array_equal(got, want)
    assert wsmod._DTRTRS is not None
    # C-ordered factors (the batched path) take the former route
    np.testing.assert_array_equal(wsmod._solve_leading_lower_t(np.ascontiguousarray(L), b), want)
    L[3, 3] = 0.0
    with pytest.raises(np.linalg.LinAlgError, match="singular"):
        wsmod._solve_leading_lower_t(L, b)


def test_inference_and_profile_read_the_sparse_factor(cholmod, monkeypatch):
    """Satterthwaite's df and profile intervals read the factor's diagonal
    (Factorization.diagonal), which a sparse tail assembles from CHOLMOD's L_rr."""
    load, formula = CASES["vector_then_scalar"]
    data = load()
    monkeypatch.setattr(wsmod, "_DENSE_LIMIT", 0)
    monkeypatch.setenv("MIXBOOT_TAIL", "dense")
    want = mb.fit(formula, data, REML=True)
    monkeypatch.setenv("MIXBOOT_TAIL", "sparse")
    model = mb.fit(formula, data, REML=True).model
    assert model.workspace.tail_kind == "sparse"
    got = build_result(model, want.theta, want.optsum)
    np.testing.assert_allclose(got.df.to_numpy(), want.df.to_numpy(), rtol=1e-6)
    ct_got, ct_want = got.coef_table(), want.coef_table()
    np.testing.assert_allclose(
        ct_got.select_dtypes("number").to_numpy(),
        ct_want.select_dtypes("number").to_numpy(),
        rtol=1e-6,
    )
    pi_got = mb_profile(got)
    pi_want = mb_profile(want)
    np.testing.assert_allclose(
        pi_got.select_dtypes("number").to_numpy(),
        pi_want.select_dtypes("number").to_numpy(),
        rtol=1e-5,
    )


def mb_profile(result):
    from mixboot.profile import profile_intervals

    return profile_intervals(result, which=["sd_(Intercept)|gs", "x"])
