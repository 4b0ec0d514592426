"""Terms on one grouping factor amalgamated into one block of the workspaces.

``(1 + x || g)`` is two terms on ``g``; the workspaces (LMM and GLMM) merge them
into one :class:`mixboot.blocks.FactorBlock` with a block-diagonal relative
factor, so that a second term on the largest factor stays in the block-diagonal
part instead of the dense tail.  What users see must not change: the same
objective at any theta as the unmerged path (``mixboot.blocks._ENABLED = False``),
the same estimates, random effects, VarCorr and theta names, and lme4's numbers
(tests/data/amalgamate_reference.json, scripts/amalgamate_reference.R).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import mixboot as mb
import mixboot.blocks as bl
from conftest import load_data
from mixboot.blocks import FactorBlock, amalgamate, block_slices, spec_order
from mixboot.pirls import GlmmWorkspace
from mixboot.spec import build_spec, z_from_terms
from mixboot.workspace import Workspace

with open(Path(__file__).parent / "data" / "amalgamate_reference.json") as fh:
    REF = json.load(fh)


def _penicillin() -> pd.DataFrame:
    """penicillin with the two made-up covariates of scripts/amalgamate_reference.R."""
    d = load_data("penicillin")
    i = np.arange(1, len(d) + 1)
    d["x"] = ((i * 7) % 11) / 10 - 0.5
    d["z"] = ((i * 5) % 13) / 6 - 1
    return d


CASES = {
    "sleep_ml": ("Reaction ~ Days + (Days || Subject)", "sleepstudy"),
    "sleep_reml": ("Reaction ~ Days + (Days || Subject)", "sleepstudy"),
    "pen_two": ("diameter ~ x + (1 | plate) + (0 + x | plate) + (1 | sample)", "penicillin"),
    "pen_vec": ("diameter ~ x + (1 + x | plate) + (0 + z | plate) + (1 | sample)", "penicillin"),
    "pen_tail": ("diameter ~ x + (1 | plate) + (1 | sample) + (0 + x | sample)", "penicillin"),
}


def _data(name: str) -> pd.DataFrame:
    return _penicillin() if name == "penicillin" else load_data(name)


@pytest.fixture
def unmerged(monkeypatch):
    """Build workspaces with every term on its own (the path before amalgamation)."""

    def off():
        monkeypatch.setattr(bl, "_ENABLED", False)

    return off


# --------------------------------------------------------------------------- the blocks
def test_amalgamate_merges_consecutive_terms_on_one_factor_only():
    d = _penicillin()
    spec = build_spec(
        "diameter ~ x + (1 + x | plate) + (0 + z | plate) + (1 | sample) + (0 + x | sample)", d
    )
    blocks = amalgamate(spec.terms)
    assert [type(b) for b in blocks] == [FactorBlock, FactorBlock]
    plate, sample = blocks
    assert plate.members == spec.terms[:2] and sample.members == spec.terms[2:]
    assert (plate.p, plate.n_theta, plate.q) == (3, 4, 72)
    assert plate.colnames == ("(Intercept)", "x", "z")
    assert block_slices(blocks) == (slice(0, 4), slice(4, 6))
    # T = blockdiag(T_k): the entries between two terms are structural zeros
    th = np.array([1.0, 0.5, 2.0, 3.0])
    np.testing.assert_array_equal(
        plate.factor(th), [[1.0, 0.0, 0.0], [0.5, 2.0, 0.0], [0.0, 0.0, 3.0]]
    )
    np.testing.assert_array_equal(plate.lower_triangle(th), [1.0, 0.5, 0.0, 2.0, 0.0, 3.0])
    batch = plate.factor(np.stack([th, 2 * th]))
    assert batch.shape == (2, 3, 3) and np.array_equal(batch[1], 2 * batch[0])
    # a term alone on its factor stays the term itself; terms of two factors with
    # the same number of levels are not merged
    spec2 = build_spec("diameter ~ x + (1 | plate) + (1 | sample)", d)
    assert amalgamate(spec2.terms) == list(spec2.terms)
    d["plate2"] = d["plate"].map({p: p.upper() for p in d["plate"].unique()})
    d["plate2"] = d["plate2"].where(np.arange(len(d)) % 5 != 0, d["plate2"].iloc[1])
    spec3 = build_spec("diameter ~ x + (1 | plate) + (0 + x | plate2)", d)
    assert len(amalgamate(spec3.terms)) == 2


def test_factor_block_refuses_terms_on_two_factors():
    spec = build_spec("diameter ~ x + (1 | plate) + (1 | sample)", _penicillin())
    with pytest.raises(ValueError, match="do not share one grouping factor"):
        FactorBlock(spec.terms)
    with pytest.raises(ValueError, match="at least two terms"):
        FactorBlock(spec.terms[:1])


def test_spec_order_maps_block_columns_to_term_columns():
    spec = build_spec(
        "diameter ~ x + (1 + x | plate) + (0 + z | plate) + (1 | sample) + (0 + x | sample)",
        _penicillin(),
    )
    blocks = amalgamate(spec.terms)
    Zb = z_from_terms(blocks, spec.n).toarray()
    order = spec_order(blocks)
    np.testing.assert_array_equal(Zb[:, order], spec.z_matrix().toarray())
    assert spec_order(list(spec.terms)) is None
    # and the split of per-level values gives each term's columns
    u = np.arange(24 * 3, dtype=float).reshape(24, 3)
    a, b = blocks[0].split(u)
    np.testing.assert_array_equal(a, u[:, :2])
    np.testing.assert_array_equal(b, u[:, 2:])


# --------------------------------------------------------------------------- InstEval
@pytest.mark.slow
def test_insteval_double_bar_on_largest_factor_stays_block_diagonal(unmerged):
    d = load_data("insteval")
    formula = "y ~ 1 + service + (1 + service || s) + (1 | d)"
    fit = mb.fit(formula, d, REML=False)
    ws = fit.model.workspace
    spec = fit.spec
    assert isinstance(ws.t1, FactorBlock) and ws.t1.members == spec.terms[:2]
    assert ws.t1.label == "s" and (ws.l1, ws.p1) == (2972, 2)
    n_d = spec.terms[2].nlevels
    assert ws.m0 == n_d + spec.p  # no s columns in the dense tail
    # lme4 (`Rscript scripts/amalgamate_reference.R ../shared/data OUT insteval`):
    # deviance 237664.62265441 at theta 0.2662001706 0.1721295342 0.4432483757
    assert fit.objective == pytest.approx(237664.62265441, abs=1e-6)
    np.testing.assert_allclose(fit.theta, [0.2662001706, 0.1721295342, 0.4432483757], atol=5e-6)
    assert fit.spec.theta_names == ("s.(Intercept)", "s.service", "d.(Intercept)")
    # the unmerged workspace gives the same objective and estimates at the same theta
    fac = ws.factorize(fit.theta[None])
    unmerged()
    old = Workspace(spec, REML=False)
    assert not isinstance(old.t1, FactorBlock) and old.m0 == 2972 + n_d + spec.p
    fac_old = old.factorize(fit.theta[None])
    assert fac.objective[0] == pytest.approx(fac_old.objective[0], rel=1e-12)
    np.testing.assert_allclose(ws.fixef_sigma(fac)[0], old.fixef_sigma(fac_old)[0], rtol=1e-9)
    beta = ws.fixef_sigma(fac)[0][0]
    for a, b in zip(
        ws.conditional_modes(fit.theta, fac, ws.response, beta),
        old.conditional_modes(fit.theta, fac_old, old.response, beta),
    ):
        np.testing.assert_allclose(a, b, rtol=1e-7, atol=1e-9)


# --------------------------------------------------------------------------- small LMMs
@pytest.mark.parametrize("case", list(CASES))
def test_lmm_with_terms_on_one_factor_equals_unmerged_and_lme4(case, unmerged):
    formula, dataset = CASES[case]
    ref = REF[case]
    data = _data(dataset)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = mb.fit(formula, data, REML=ref["REML"])
    ws = fit.model.workspace
    assert any(isinstance(b, FactorBlock) for b in ws.blocks)
    if case == "pen_tail":
        assert not isinstance(ws.t1, FactorBlock) and isinstance(ws.rest[0], FactorBlock)
    # lme4 at a tight optimum
    assert fit.spec.theta_names == tuple(ref["theta_names"])
    assert fit.objective == pytest.approx(ref["objective"], abs=2e-8)
    np.testing.assert_allclose(fit.theta, ref["theta"], atol=5e-6)
    np.testing.assert_allclose(fit.beta, ref["beta"], rtol=1e-6)
    vc = fit.varcorr
    np.testing.assert_allclose(vc["sdcor"].to_numpy(), ref["vcov_sd"], rtol=5e-5, atol=1e-6)
    ranef = fit.ranef
    assert sorted(ranef) == sorted(ref["ranef"])
    for g, frame in ranef.items():
        np.testing.assert_allclose(frame.to_numpy(), np.column_stack(ref["ranef"][g]), atol=2e-4)

    # the unmerged path: the same numbers at the same theta, and the same fit
    thetas = fit.theta[None] * np.array([[1.0], [0.7], [1.3]]) + np.array([[0.0], [0.05], [0.0]])
    new = fit.model.workspace
    unmerged()
    spec = fit.spec
    old = Workspace(spec, REML=ref["REML"])
    assert not any(isinstance(b, FactorBlock) for b in old.blocks)
    fn, fo = new.factorize(thetas), old.factorize(thetas)
    np.testing.assert_allclose(fn.objective, fo.objective, rtol=1e-12, atol=1e-10)
    np.testing.assert_allclose(new.fixef_sigma(fn)[0], old.fixef_sigma(fo)[0], rtol=1e-10)
    np.testing.assert_allclose(new.vcov_unscaled(fn), old.vcov_unscaled(fo), rtol=1e-9)
    beta = new.fixef_sigma(fn)[0][0]
    un = new.conditional_modes(thetas[0], fn, new.response, beta)
    uo = old.conditional_modes(thetas[0], fo, old.response, beta)
    assert [u.shape for u in un] == [(t.nlevels, t.p) for t in spec.terms]
    for a, b in zip(un, uo):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        before = mb.fit(formula, data, REML=ref["REML"])
    # two optimizer runs whose evaluations differ in the last bits: the same optimum
    # (pen_vec's plate.z sits on a flat boundary: 0 in one run, 6e-7 in the other)
    assert fit.objective == pytest.approx(before.objective, abs=1e-8)
    np.testing.assert_allclose(fit.theta, before.theta, atol=2e-5)
    assert list(fit.varcorr.columns) == list(before.varcorr.columns)
    assert fit.varcorr[["grp", "var1"]].equals(before.varcorr[["grp", "var1"]])
    np.testing.assert_allclose(fit.varcorr["sdcor"], before.varcorr["sdcor"], atol=1e-5)
    for g, frame in fit.ranef.items():
        assert list(frame.columns) == list(before.ranef[g].columns)
        np.testing.assert_allclose(frame.to_numpy(), before.ranef[g].to_numpy(), atol=1e-4)


def test_lmm_bootstrap_bits_do_not_depend_on_B():
    data = load_data("sleepstudy")
    fit = mb.fit("Reaction ~ Days + (Days || Subject)", data, REML=False)
    assert isinstance(fit.model.workspace.t1, FactorBlock)
    small = mb.bootMer(fit, B=12, seed=3)
    large = mb.bootMer(fit, B=40, seed=3)
    assert large.estimates[:12].tobytes() == small.estimates.tobytes()


# --------------------------------------------------------------------------- GLMMs
GLMM_FORMULAS = [
    "cbind(incidence, size - incidence) ~ period + (1 + t || herd)",
    "cbind(incidence, size - incidence) ~ period + (1 | obs) + (1 + t || herd)",
]


def _cbpp() -> pd.DataFrame:
    d = mb.datasets.load("cbpp")
    d["t"] = d["period"].astype(float) - 2.5
    return d


@pytest.mark.parametrize("formula", GLMM_FORMULAS)
def test_glmm_with_double_bar_fits_as_unmerged(formula, monkeypatch):
    d = _cbpp()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = mb.fit(formula, d, family="binomial")
        ws = fit.model.workspace
        assert isinstance(ws, GlmmWorkspace)
        assert any(isinstance(b, FactorBlock) for b in [ws.t1, *ws.rest])
        # PIRLS at the same (theta, beta): the same modes (in term order) and criterion
        theta, beta = fit.theta[None], fit.beta[None]
        Y = fit.spec.y[None]
        st = ws.pirls(theta, beta, Y, joint=False)
        monkeypatch.setattr(bl, "_ENABLED", False)
        before = mb.fit(formula, d, family="binomial")
    old = before.model.workspace
    assert not any(isinstance(b, FactorBlock) for b in [old.t1, *old.rest])
    so = old.pirls(theta, beta, Y, joint=False)
    np.testing.assert_allclose(st.laplace, so.laplace, rtol=1e-12)
    np.testing.assert_allclose(st.u, so.u, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(st.eta, so.eta, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(ws.vcov_rx(fit.theta, st.eta[0]), old.vcov_rx(fit.theta, so.eta[0]))
    assert fit.objective == pytest.approx(before.objective, abs=1e-8)
    np.testing.assert_allclose(fit.theta, before.theta, atol=1e-6)
    np.testing.assert_allclose(fit.beta, before.beta, atol=1e-6)
    for a, b in zip(fit.u, before.u):
        np.testing.assert_allclose(a, b, atol=1e-6)
    assert fit.varcorr[["grp", "var1"]].equals(before.varcorr[["grp", "var1"]])


def test_glmm_bootstrap_bits_do_not_depend_on_B():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = mb.fit(GLMM_FORMULAS[0], _cbpp(), family="binomial")
        assert isinstance(fit.model.workspace.t1, FactorBlock)
        small = mb.bootMer(fit, B=5, seed=7)
        large = mb.bootMer(fit, B=12, seed=7)
    assert large.estimates[:5].tobytes() == small.estimates.tobytes()
