"""The large-model (single-theta) path: the lean in-place tail and its memory rule.

A model whose R = T'Z1 is too large for the batched kernel (``Workspace.dense``
False) builds its tail in one Fortran-ordered buffer, lower triangle only, and
factors it in place (:mod:`mixboot.tail`).  These tests force small models onto
that path (``_DENSE_LIMIT = 0``) and compare with the batched dense path, check
that factorizations handed out stay independent of later evaluations, that the
memory rule refuses a tail that is too wide with an error naming the memory, and
fit a shrunken version of the crossed benchmark model both ways.
"""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import mixboot as mb
import mixboot.tail as tailmod
import mixboot.workspace as wsmod
from conftest import load_data
from mixboot.spec import build_spec
from mixboot.workspace import Workspace

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from crossed_data import make_crossed  # noqa: E402


def mixed_tail(scalar_first: bool, seed: int = 4, n: int = 300) -> pd.DataFrame:
    """g1 (most levels, scalar) first; the tail holds a vector term and a scalar term."""
    rng = np.random.default_rng(seed)
    lv, ls = (6, 8) if scalar_first else (8, 6)
    g1 = rng.integers(0, 12, n)
    gv = rng.integers(0, lv, n)
    gs = rng.integers(0, ls, n)
    x = rng.normal(size=n)
    y = (
        1.0
        + 0.3 * x
        + rng.normal(size=12)[g1]
        + rng.normal(size=lv)[gv]
        + rng.normal(scale=0.5, size=lv)[gv] * x
        + rng.normal(scale=0.7, size=ls)[gs]
        + rng.normal(size=n)
    )
    return pd.DataFrame({"y": y, "x": x, "g1": g1, "gv": gv, "gs": gs})


CASES = {
    "sleepstudy_slope": (
        lambda: load_data("sleepstudy"),
        "Reaction ~ 1 + Days + (1 + Days|Subject)",
    ),
    "penicillin": (lambda: load_data("penicillin"), "diameter ~ 1 + (1|plate) + (1|sample)"),
    "vector_then_scalar": (lambda: mixed_tail(False), "y ~ 1 + x + (1|g1) + (1 + x|gv) + (1|gs)"),
    "scalar_then_vector": (lambda: mixed_tail(True), "y ~ 1 + x + (1|g1) + (1 + x|gv) + (1|gs)"),
}


def workspaces(key, REML, monkeypatch):
    load, formula = CASES[key]
    spec = build_spec(formula, load())
    dense = Workspace(spec, REML=REML)
    monkeypatch.setattr(wsmod, "_DENSE_LIMIT", 0)
    single = Workspace(spec, REML=REML)
    assert dense.dense and not single.dense and single.tail_kind == "dense"
    return spec, dense, single


def assert_same_estimates(theta, dense, fd, other, fo) -> None:
    """beta, sigma, vcov and conditional modes of ``other``'s factorization ``fo`` equal
    the dense workspace's (``fd``) at the same theta."""
    (bd, sd), (bo, so) = dense.fixef_sigma(fd), other.fixef_sigma(fo)
    np.testing.assert_allclose(bo, bd, rtol=1e-9, atol=1e-12 * np.abs(bd).max())
    np.testing.assert_allclose(so, sd, rtol=1e-10)
    np.testing.assert_allclose(other.vcov_unscaled(fo), dense.vcov_unscaled(fd), rtol=1e-9)
    ud = dense.conditional_modes(theta, fd, dense.response, bd[0])
    uo = other.conditional_modes(theta, fo, other.response, bo[0])
    for a, b in zip(uo, ud):
        np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-10 * np.abs(b).max())


def thetas(spec, rng, k=3):
    lower = spec.lower_bounds
    for _ in range(k):
        yield np.where(
            lower == 0, rng.uniform(0.2, 2.0, spec.n_theta), rng.normal(0.0, 0.5, spec.n_theta)
        )


@pytest.mark.parametrize("key", sorted(CASES))
@pytest.mark.parametrize("REML", [False, True], ids=["ML", "REML"])
def test_lean_tail_equals_batched_path(key, REML, monkeypatch):
    spec, dense, single = workspaces(key, REML, monkeypatch)
    for theta in thetas(spec, np.random.default_rng(7)):
        fd, fs = dense.factorize(theta[None]), single.factorize(theta[None])
        assert fs.objective[0] == pytest.approx(fd.objective[0], rel=1e-10, abs=0)
        # the factor's lower triangle is the batched path's (the strict upper part is unused)
        Ld, Ls = np.tril(fd.L[0]), np.tril(fs.L[0])
        np.testing.assert_allclose(Ls, Ld, rtol=1e-9, atol=1e-9 * np.abs(Ld).max())
        assert_same_estimates(theta, dense, fd, single, fs)


@pytest.mark.parametrize("key", ["penicillin", "vector_then_scalar"])
def test_fit_on_the_single_path_equals_the_batched_fit(key, monkeypatch):
    load, formula = CASES[key]
    data = load()
    want = mb.fit(formula, data, REML=False)
    monkeypatch.setattr(wsmod, "_DENSE_LIMIT", 0)
    got = mb.fit(formula, data, REML=False)
    assert not got.model.workspace.dense and want.model.workspace.dense
    # The batched fit may take Newton steps where the single one runs BOBYQA: the
    # optima agree to the objective's precision, theta to the optimizers' tolerance.
    assert got.objective == pytest.approx(want.objective, rel=1e-10, abs=0)
    np.testing.assert_allclose(got.theta, want.theta, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(got.beta, want.beta, rtol=1e-4, atol=1e-6)


def test_a_kept_factorization_is_not_overwritten(monkeypatch):
    """The workspace reuses its buffer only while no factorization handed out holds it."""
    spec, dense, single = workspaces("vector_then_scalar", False, monkeypatch)
    a, b = list(thetas(spec, np.random.default_rng(3), 2))
    fa = single.factorize(a[None])
    La = fa.L.copy()
    fb = single.factorize(b[None])
    assert not np.shares_memory(fa.L, fb.L)
    np.testing.assert_array_equal(fa.L, La)
    del fa, fb
    # nothing holds the buffer now: the next evaluation reuses it, and equals a fresh one
    first = single.factorize(a[None]).objective[0]
    again = single.factorize(a[None])
    assert np.shares_memory(again.L, single._single._buf)
    assert again.objective[0] == first
    assert again.objective[0] == pytest.approx(dense.factorize(a[None]).objective[0], rel=1e-10)


def test_not_positive_definite_gives_ok_false(monkeypatch):
    spec, dense, single = workspaces("penicillin", False, monkeypatch)
    theta = spec.theta_start
    single.factorize(theta[None])
    tail, resp = single._single, single.response
    P = np.full((single.l1, single.p1, single.p1), 1e6)  # A22 - F P F' far from definite
    L, ok = tail.factor(theta, P, resp.z1y[0], resp.taily[0], float(resp.yty[0]))
    assert not ok and np.isnan(L).all()
    # the workspace recovers on the next evaluation
    assert single.objective(theta) == pytest.approx(dense.objective(theta), rel=1e-10)


def test_single_path_workspace_pickles(monkeypatch):
    spec, dense, single = workspaces("scalar_then_vector", True, monkeypatch)
    theta = next(thetas(spec, np.random.default_rng(1)))
    want = single.objective(theta)
    copy = pickle.loads(pickle.dumps(single))
    assert copy._single._buf is None
    assert copy.objective(theta) == want


# -- the memory rule ------------------------------------------------------------------


def test_memory_rule_refuses_a_tail_that_is_too_wide(monkeypatch):
    # MIXBOOT_TAIL=dense: no sparse fallback (tests/test_cholmod.py covers that)
    monkeypatch.setenv("MIXBOOT_TAIL", "dense")
    load, formula = CASES["penicillin"]
    spec = build_spec(formula, load())
    monkeypatch.setattr(wsmod, "_DENSE_LIMIT", 0)
    m = 6 + 1 + 1  # sample's 6 columns, the intercept, the response
    monkeypatch.setenv("MIXBOOT_TAIL_MEMORY", str(8 * m * m - 1))
    with pytest.raises(MemoryError, match=r"8 x 8.*needs 0\.00 GiB.*MIXBOOT_TAIL_MEMORY") as err:
        Workspace(spec, REML=False)
    assert isinstance(err.value, tailmod.TailMemoryError)
    monkeypatch.setenv("MIXBOOT_TAIL_MEMORY", str(8 * m * m))
    assert Workspace(spec, REML=False).tail_kind == "dense"
    # the batched path never consults the rule
    monkeypatch.setattr(wsmod, "_DENSE_LIMIT", 400_000)
    monkeypatch.setenv("MIXBOOT_TAIL_MEMORY", "1")
    assert Workspace(spec, REML=False).tail_kind == "batched"


def test_memory_rule_message_names_the_memory(monkeypatch):
    monkeypatch.setenv("MIXBOOT_TAIL", "dense")
    monkeypatch.setenv("MIXBOOT_TAIL_MEMORY", "2G")
    assert tailmod.tail_memory_limit() == 2 * 2**30
    with pytest.raises(tailmod.TailMemoryError) as err:
        tailmod.tail_kind(30_000)
    text = str(err.value)
    assert "30000 x 30000" in text and "6.71 GiB" in text and "2.00 GiB" in text
    assert tailmod.tail_kind(10_003) == "dense"


@pytest.mark.parametrize("raw", ["lots", "-5", "0"])
def test_memory_limit_setting_is_checked(monkeypatch, raw):
    monkeypatch.setenv("MIXBOOT_TAIL_MEMORY", raw)
    with pytest.raises(ValueError, match="MIXBOOT_TAIL_MEMORY"):
        tailmod.tail_memory_limit()


def test_default_memory_limit_is_a_fraction_of_available(monkeypatch):
    monkeypatch.delenv("MIXBOOT_TAIL_MEMORY", raising=False)
    monkeypatch.setattr(tailmod, "_available_memory", lambda: 10 * 2**30)
    assert tailmod.tail_memory_limit() == int(tailmod.MEMORY_FRACTION * 10 * 2**30)


# -- the crossed model, shrunk ----------------------------------------------------------


@pytest.fixture(scope="module")
def crossed_small():
    return make_crossed(rows=20_000, g1=2_000, g2=1_000, seed=5)


def test_crossed_model_fits_on_the_single_path(crossed_small, monkeypatch):
    formula = "y ~ 1 + x + (1|g1) + (1|g2)"
    got = mb.fit(formula, crossed_small, REML=False)
    ws = got.model.workspace
    assert not ws.dense and ws.tail_kind == "dense" and ws.m == 1_000 + 2 + 1
    monkeypatch.setattr(wsmod, "_DENSE_LIMIT", 10**9)
    want = mb.fit(formula, crossed_small, REML=False)
    assert want.model.workspace.dense
    assert got.objective == pytest.approx(want.objective, rel=1e-10, abs=0)
    np.testing.assert_allclose(got.theta, want.theta, rtol=1e-3)
    np.testing.assert_allclose(got.beta, want.beta, rtol=1e-4)
    # the simulation's truth: sd(g1) = 1, sd(g2) = 0.7, sigma = 1.5, beta = (2, 0.5)
    np.testing.assert_allclose(got.theta * got.sigma, [1.0, 0.7], rtol=0.15)
    np.testing.assert_allclose(got.beta, [2.0, 0.5], atol=0.1)


def test_union_by_marks_equals_union_by_sorting():
    from mixboot import tail

    rng = np.random.default_rng(12)
    size = 5000
    a = rng.integers(0, size, 20_000)
    b = rng.integers(0, size, 300)
    marked = tail._union_positions(a, b, size)
    sorted_keys = np.union1d(a, b)
    assert np.array_equal(marked[0], sorted_keys)
    assert np.array_equal(marked[1], np.searchsorted(sorted_keys, a))
    assert np.array_equal(marked[2], np.searchsorted(sorted_keys, b))
    big = tail._union_positions(a, b, tail._MARK_ENTRIES + 1)  # the sorting path
    for x, y in zip(marked, big):
        assert np.array_equal(x, y)
