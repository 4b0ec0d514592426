"""Likelihood-ratio tests: reduced models, lme4's anova table, pbkrtest's PBmodcomp."""

import dataclasses
import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import mixboot as mb
from conftest import load_data
from mixboot import refit, runner
from mixboot.compare import lrt, pb_lrt, reduced_model

REFERENCE = Path(__file__).resolve().parent / "data" / "compare_reference.json"
# Our data set names -> the CSV each reference case was computed on.
DATASETS = {"ss": "sleepstudy", "ck": "cake", "pn": "penicillin", "ps": "pastes"}


def _reference(kind):
    return json.loads(REFERENCE.read_text())[kind] if REFERENCE.is_file() else []


def _fit(formula, dataset, REML):
    return mb.fit(formula, load_data(DATASETS[dataset]), REML=REML)


@pytest.fixture(scope="module")
def reaction():
    return mb.datasets.load("reaction")


@pytest.fixture(scope="module")
def rt_fit():
    return mb.fit("rt ~ cond + (1 | subject) + (1 | item)", mb.datasets.load("rt"), REML=False)


@pytest.fixture(scope="module")
def crossed_pair():
    df = mb.datasets.load("crossed")
    large = mb.fit("diameter ~ 1 + (1 | plate) + (1 | sample)", df, REML=False)
    small = mb.fit("diameter ~ 1 + (1 | plate)", df, REML=False)
    return large, small


# --------------------------------------------------------------------------- reduced_model
@pytest.mark.parametrize("test", ["condb", "cond[T.b]", "cond"])
def test_reduced_model_drops_a_coefficient(rt_fit, test):
    model, k = reduced_model(rt_fit, test)
    assert isinstance(model, mb.LinearMixedModel) and not model.REML and k == 1
    assert model.spec.fe_names == ("(Intercept)",)
    scratch = mb.fit("rt ~ 1 + (1 | subject) + (1 | item)", mb.datasets.load("rt"), REML=False)
    np.testing.assert_allclose(model.fit().objective, scratch.objective, rtol=1e-10)
    assert rt_fit.spec.p == 2  # the full model is untouched


def test_reduced_model_drops_a_term_keeping_the_coding():
    df = load_data("cake")
    full = mb.fit("angle ~ recipe * temp + (1|recipe:replicate)", df, REML=False)
    additive = mb.fit("angle ~ recipe + temp + (1|recipe:replicate)", df, REML=False)
    for test in ("recipe:temp", "temp:recipe"):
        model, k = reduced_model(full, test)
        assert k == 2
        assert model.spec.fe_names == additive.spec.fe_names
        np.testing.assert_allclose(model.fit().objective, additive.objective, rtol=1e-9)
    # Dropping the main effect leaves the interaction's two columns as they were.
    model, k = reduced_model(full, "recipe")
    assert k == 2
    np.testing.assert_array_equal(model.spec.X, full.spec.X[:, [0, 3, 4, 5]])


def test_reduced_model_can_simulate_newdata(reaction):
    full = mb.fit("Reaction ~ 1 + Days + (1 + Days | Subject)", reaction, REML=False)
    model, _ = reduced_model(full, "(Intercept)")
    fit = model.fit()
    assert fit.spec.fe_names == ("Days",)
    assert mb.simulate(fit, 3, seed=1, newdata=reaction.head(20)).shape == (20, 3)
    assert fit.formula.endswith(" - (Intercept)")


def test_reduced_model_errors(rt_fit):
    with pytest.raises(
        ValueError,
        match=r"'nope'.*coefficients: \['\(Intercept\)', 'condb'\]"
        r".*terms: \['\(Intercept\)', 'cond'\]",
    ):
        reduced_model(rt_fit, "nope")
    with pytest.raises(TypeError, match="test must be"):
        reduced_model(rt_fit, 3)
    with pytest.raises(TypeError, match="LMMResult"):
        reduced_model("rt ~ cond", "cond")


# --------------------------------------------------------------------------- lrt
@pytest.mark.parametrize("case", _reference("anova"), ids=lambda c: c["id"])
def test_lrt_matches_lme4_anova(case):
    fits = [_fit(f, case["dataset"], case["REML"]) for f in case["formulas"]]
    names = [f"m{i}" for i in range(len(fits))]
    out = lrt(*fits[::-1], names=names[::-1])  # given in reverse: lrt sorts them
    tab = out.table
    assert list(tab.index) == names
    assert out.refitted == (tuple(names[::-1]) if case["REML"] else ())
    np.testing.assert_array_equal(tab["npar"], case["npar"])
    for col, key in [
        ("deviance", "deviance"),
        ("logLik", "logLik"),
        ("AIC", "AIC"),
        ("BIC", "BIC"),
    ]:
        np.testing.assert_allclose(tab[col], case[key], rtol=1e-6)
    # Chisq is a difference of deviances: relative to them it agrees to 1e-6 (a
    # tiny Chisq to within 1e-6 of the deviance's size, not of its own).
    np.testing.assert_allclose(
        tab["Chisq"].iloc[1:], case["Chisq"][1:], rtol=1e-6, atol=1e-6 * max(case["deviance"])
    )
    assert tab["Df"].iloc[1:].tolist() == case["Df"][1:]
    assert pd.isna(tab["Df"].iloc[0]) and np.isnan(tab["Chisq"].iloc[0])
    np.testing.assert_allclose(tab["Pr(>Chisq)"].iloc[1:], case["p"][1:], rtol=1e-3, atol=1e-8)


def test_lrt_sorts_names_and_notes_refits(reaction):
    m1 = mb.fit("Reaction ~ Days + (1 | Subject)", reaction)
    m2 = mb.fit("Reaction ~ Days + (Days | Subject)", reaction, REML=False)
    out = lrt(m2, m1)
    assert list(out.table.index) == [m1.formula, m2.formula]
    assert list(out.table.columns) == [
        "npar",
        "AIC",
        "BIC",
        "logLik",
        "deviance",
        "Chisq",
        "Df",
        "Pr(>Chisq)",
    ]
    assert out.refitted == (m1.formula,)
    assert out.note == f"refitting model(s) with ML (instead of REML): {m1.formula}"
    assert out.note in repr(out) and "Pr(>Chisq)" in repr(out)
    assert not out.fits[0].REML and out.fits[1] is m2
    with pytest.raises(dataclasses.FrozenInstanceError):
        out.refitted = ()
    ml = lrt(m2, m2)  # equal formulas: rows are m1, m2; no refit, Df 0 has no p-value
    assert list(ml.table.index) == ["m1", "m2"] and ml.note == "" and "refitting" not in repr(ml)
    assert np.isnan(ml.table["Pr(>Chisq)"].iloc[1]) and ml.table["Chisq"].iloc[1] == 0


def test_lrt_errors(reaction):
    m1 = mb.fit("Reaction ~ Days + (1 | Subject)", reaction, REML=False)
    with pytest.raises(ValueError, match="at least two fits"):
        lrt(m1)
    other = mb.fit("Reaction ~ Days + (1 | Subject)", reaction.iloc[:170], REML=False)
    with pytest.raises(ValueError, match="same observations.*180.*170"):
        lrt(m1, other)
    shifted = mb.fit(
        "Reaction ~ Days + (1 | Subject)",
        reaction.assign(Reaction=reaction.Reaction + 1),
        REML=False,
    )
    with pytest.raises(ValueError, match="same response values"):
        lrt(m1, shifted)
    with pytest.raises(ValueError, match="2 distinct labels"):
        lrt(m1, m1, names=["a"])
    with pytest.raises(TypeError, match="fit 2 must be a fitted LMMResult"):
        lrt(m1, "m2")


# --------------------------------------------------------------------------- pb_lrt
@pytest.mark.parametrize("case", _reference("pbmodcomp"), ids=lambda c: c["id"])
def test_pb_lrt_matches_pbmodcomp(case):
    """Observed LRT to 1e-6; the bootstrap p-value within Monte Carlo error.

    Our p and R's (over all valid replicates, the same definition) are independent
    estimates of one tail probability p from B1 and B2 simulations: binomial
    proportions, so their difference has standard error
    sqrt(p (1 - p) (1/B1 + 1/B2)).  Four of those (p taken as the average of the
    two) bound it with probability ~0.99994 per case.
    """
    large = _fit(case["large"], case["dataset"], case["REML"])
    small = _fit(case["small"], case["dataset"], case["REML"])
    B = 2000
    res = pb_lrt(large, small, B=B, seed=case["seed"])
    np.testing.assert_allclose(res.lrt, case["lrt"], rtol=1e-6, atol=1e-7)
    assert res.df == case["df"]
    np.testing.assert_allclose(res.p_chisq, case["p_chisq"], rtol=1e-4, atol=1e-8)
    assert res.n_failed == 0 and res.n_valid == B
    p = 0.5 * (res.p_boot + case["p_all"])
    se = np.sqrt(p * (1 - p) * (1 / res.n_valid + 1 / case["n_valid"]))
    assert abs(res.p_boot - case["p_all"]) <= 4 * se, (res.p_boot, case["p_all"], se)
    assert res.refitted == (("large", "small") if case["REML"] else ())


def test_pb_lrt_p_value_formula_and_result(crossed_pair):
    large, small = crossed_pair
    res = pb_lrt(large, small, B=99, seed=3)
    assert (res.B, res.n_valid, res.n_failed, res.df) == (99, 99, 0, 1)
    np.testing.assert_allclose(res.lrt, small.objective - large.objective)
    expected = (1 + np.sum(res.lrt_boot >= res.lrt - 1e-6)) / (1 + 99)
    assert res.p_boot == expected
    assert res.seed == 3 and res.lrt_boot.shape == (99,) and not res.lrt_boot.flags.writeable
    assert "PBtest" in repr(res) and "99 valid of B = 99" in repr(res)
    assert list(res.table.index) == ["LRT", "PBtest"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.p_boot = 0.5


def test_pb_lrt_reproducible_and_same_for_any_n_jobs(crossed_pair, monkeypatch):
    large, small = crossed_pair
    monkeypatch.setattr(runner, "chunk_size", lambda *models: 16)  # several chunks
    one = pb_lrt(large, small, B=64, seed=11)
    two = pb_lrt(large, small, B=64, seed=11, n_jobs=2)
    np.testing.assert_array_equal(one.lrt_boot, two.lrt_boot)
    assert one.p_boot == two.p_boot
    again = pb_lrt(large, small, B=64, seed=one.seed)
    np.testing.assert_array_equal(one.lrt_boot, again.lrt_boot)
    other = pb_lrt(large, small, B=64, seed=12)
    assert not np.array_equal(one.lrt_boot, other.lrt_boot)
    fresh = pb_lrt(large, small, B=8, seed=None)
    np.testing.assert_array_equal(
        pb_lrt(large, small, B=8, seed=fresh.seed).lrt_boot, fresh.lrt_boot
    )


def test_pb_lrt_counts_failures(crossed_pair, monkeypatch):
    """A refit that raises and one that does not converge are excluded and counted."""
    large, small = crossed_pair
    real = refit.refit_responses
    calls = {"n": 0}

    def flaky(model, Y, **kw):
        if model.spec.n_theta == 2:  # the large model
            if Y.shape[1] > 1:
                raise RuntimeError("batch broke")  # forces column-by-column refits
            calls["n"] += 1
            if calls["n"] == 2:
                raise RuntimeError("replicate broke")
            if calls["n"] == 5:
                rb = real(model, Y, **kw)
                return dataclasses.replace(rb, converged=np.zeros(1, dtype=bool))
        return real(model, Y, **kw)

    monkeypatch.setattr(refit, "refit_responses", flaky)
    with pytest.warns(RuntimeWarning, match="2 of 10 bootstrap replicates failed"):
        res = pb_lrt(large, small, B=10, seed=4)
    assert (res.n_valid, res.n_failed) == (8, 2)
    assert np.isnan(res.lrt_boot).sum() == 2
    assert res.failures["replicate"].tolist() == [1, 4]
    assert res.failures["stage"].tolist() == ["refit large", "refit large"]
    assert "replicate broke" in res.failures["message"].iloc[0]
    assert "did not converge" in res.failures["message"].iloc[1]
    valid = res.lrt_boot[np.isfinite(res.lrt_boot)]
    assert res.p_boot == (1 + np.sum(valid >= res.lrt - 1e-6)) / 9
    assert "2 failed, excluded" in repr(res)


def test_pb_lrt_random_slope_and_correlation(reaction):
    full = mb.fit("Reaction ~ Days + (Days | Subject)", reaction)
    zerocorr = mb.fit("Reaction ~ Days + (Days || Subject)", reaction, REML=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = pb_lrt(full, zerocorr, B=50, seed=1, show_progress=True)
    assert res.refitted == ("large",) and res.note.startswith("refitting model(s) with ML")
    assert res.n_valid == 50 and 0 < res.p_boot <= 1


def test_pb_lrt_validation(crossed_pair, reaction):
    large, small = crossed_pair
    for B in (0, -3, 1.5, True):
        with pytest.raises(ValueError, match="B must be an integer >= 1"):
            pb_lrt(large, small, B=B)
    with pytest.raises(ValueError, match="n_jobs"):
        pb_lrt(large, small, B=5, n_jobs=0)
    with pytest.raises(ValueError, match="fewer parameters than large"):
        pb_lrt(small, large, B=5)
    with pytest.raises(ValueError, match="fewer parameters than large"):
        pb_lrt(large, large, B=5)
    elsewhere = mb.fit("Reaction ~ Days + (1 | Subject)", reaction, REML=False)
    with pytest.raises(ValueError, match="same observations"):
        pb_lrt(large, elsewhere, B=5)
    with pytest.raises(TypeError, match="small must be a fitted LMMResult"):
        pb_lrt(large, None, B=5)
    a = mb.fit("Reaction ~ Days + (Days | Subject)", reaction, REML=False)
    b = mb.fit("Reaction ~ 0 + I(Days ** 2) + (1 | Subject)", reaction, REML=False)
    with pytest.raises(ValueError, match=r"not nested.*I\(Days \*\* 2\)"):
        pb_lrt(a, b, B=5)
