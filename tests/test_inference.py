"""Satterthwaite degrees of freedom, coefficient tables and type III anova against lmerTest."""

from __future__ import annotations

import dataclasses
import json
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import mixboot as mb
from conftest import SHARED, has_shared, load_data
from mixboot import inference

pytestmark = pytest.mark.skipif(not has_shared(), reason="reference data (../shared) not found")

SLEEP = "Reaction ~ 1 + Days + (1 + Days|Subject)"


def _cases() -> list[dict]:
    path = SHARED / "reference" / "lmertest_inference.json"
    if not path.is_file():
        return []
    with open(path) as fh:
        return json.load(fh)


CASES = _cases()


def _vec(x) -> np.ndarray:
    return np.atleast_1d(np.asarray(x, dtype=float))


def _check_p(got, want) -> None:
    """p-values: 1e-4 relative on log p, and 3e-3 relative on p.

    lmerTest's own fits in the reference sit slightly off the optimum that lme4's
    reference fits (and mixboot) reach: their standard errors differ from lme4's by
    up to 2.7e-5 and their df by up to 9e-5 (penicillin) relative, which moves a
    p-value of 1e-17 (t = 37 on 17 df) or 4e-7 (t = 28 on 5.5 df) by up to 2.4e-3
    relative (1.2e-4 at p = 1.7e-6, sleepstudy ML).  Where p > 1e-5, 1e-4 relative holds.
    """
    got, want = np.asarray(got, dtype=float), _vec(want)
    np.testing.assert_allclose(np.log(got), np.log(want), rtol=1e-4)
    np.testing.assert_allclose(got, want, rtol=3e-3)
    moderate = want > 1e-5
    np.testing.assert_allclose(got[moderate], want[moderate], rtol=1e-4)


@pytest.fixture(scope="module")
def fits():
    cache = {}

    def get(case):
        if case["id"] not in cache:
            cache[case["id"]] = mb.fit(
                case["formula"], load_data(case["dataset"]), REML=case["REML"]
            )
        return cache[case["id"]]

    return get


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_coef_table_matches_lmertest(case, fits):
    r = fits(case)
    table = r.coef_table("satterthwaite")
    assert list(table.index) == list(np.atleast_1d(case["terms"]))
    assert list(table.columns) == ["Estimate", "Std. Error", "df", "t value", "Pr(>|t|)"]
    np.testing.assert_allclose(table["Estimate"], _vec(case["estimate"]), rtol=1e-5)
    np.testing.assert_allclose(table["Std. Error"], _vec(case["se"]), rtol=1e-4)
    np.testing.assert_allclose(table["df"], _vec(case["satterthwaite_df"]), rtol=1e-3)
    np.testing.assert_allclose(table["t value"], _vec(case["satterthwaite_t"]), rtol=1e-4)
    _check_p(table["Pr(>|t|)"], case["satterthwaite_p"])
    # The p-value is lmerTest's function of t and df: with the reference's t and df it is
    # the reference's p to rounding.
    ref_p = 2 * stats.t.sf(np.abs(_vec(case["satterthwaite_t"])), _vec(case["satterthwaite_df"]))
    np.testing.assert_allclose(ref_p, _vec(case["satterthwaite_p"]), rtol=1e-7)
    # The default ddf is Satterthwaite: the result's own statistics are these.
    assert r.ddf == "satterthwaite"
    np.testing.assert_allclose(r.pvalues, table["Pr(>|t|)"], rtol=0)
    np.testing.assert_allclose(r.tvalues, table["t value"], rtol=0)
    np.testing.assert_allclose(r.df, table["df"], rtol=0)


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_anova_matches_lmertest(case, fits):
    r = fits(case)
    tab = r.anova()
    assert list(tab.columns) == ["Sum Sq", "Mean Sq", "NumDF", "DenDF", "F value", "Pr(>F)"]
    terms = list(np.atleast_1d(case["anova_terms"]))
    assert list(tab.index) == terms
    if not terms:
        return
    np.testing.assert_allclose(tab["F value"], _vec(case["anova_F"]), rtol=1e-4)
    np.testing.assert_array_equal(tab["NumDF"], _vec(case["anova_numdf"]))
    np.testing.assert_allclose(tab["DenDF"], _vec(case["anova_dendf"]), rtol=1e-3)
    _check_p(tab["Pr(>F)"], case["anova_p"])
    ref_p = stats.f.sf(_vec(case["anova_F"]), _vec(case["anova_numdf"]), _vec(case["anova_dendf"]))
    np.testing.assert_allclose(ref_p, _vec(case["anova_p"]), rtol=1e-7)
    np.testing.assert_allclose(tab["Mean Sq"], tab["F value"] * r.sigma**2, rtol=1e-12)
    np.testing.assert_allclose(tab["Sum Sq"], tab["Mean Sq"] * tab["NumDF"], rtol=1e-12)


def test_one_df_anova_is_the_squared_t(fits):
    case = next(c for c in CASES if c["id"] == "sleepstudy_reml")
    r = fits(case)
    row = r.anova().loc["Days"]
    ct = r.coef_table().loc["Days"]
    assert row["F value"] == pytest.approx(ct["t value"] ** 2, rel=1e-12)
    assert row["DenDF"] == pytest.approx(ct["df"], rel=1e-12)
    assert row["Pr(>F)"] == pytest.approx(ct["Pr(>|t|)"], rel=1e-9)


def test_type3_contrasts_of_the_cake_model():
    """Treatment coding: recipe is tested at temp = 0; temp as the slope averaged over recipes."""
    r = mb.fit("angle ~ recipe * temp + (1|recipe:replicate)", load_data("cake"))
    L = dict(inference.type3_contrasts(r.spec))
    names = list(r.spec.fe_names)
    assert set(L) == {"recipe", "temp", "recipe:temp"}
    np.testing.assert_allclose(L["recipe"], np.eye(6)[[1, 2]], atol=1e-12)
    np.testing.assert_allclose(L["recipe:temp"], np.eye(6)[[4, 5]], atol=1e-12)
    temp = np.zeros(6)
    temp[names.index("temp")] = 1
    temp[[names.index("recipeB:temp"), names.index("recipeC:temp")]] = 1 / 3
    np.testing.assert_allclose(L["temp"], temp[None, :], atol=1e-12)


def test_type3_is_invariant_to_the_coding():
    """Sum coding tests the same hypotheses as treatment coding (lmerTest maps them)."""
    data = load_data("cake")
    a = mb.fit("angle ~ recipe * temp + (1|recipe:replicate)", data).anova()
    b = mb.fit(
        "angle ~ recipe * temp + (1|recipe:replicate)", data, contrasts={"recipe": "sum"}
    ).anova()
    np.testing.assert_allclose(b["F value"], a["F value"], rtol=1e-5)
    np.testing.assert_allclose(b["DenDF"], a["DenDF"], rtol=1e-4)
    np.testing.assert_array_equal(b["NumDF"], a["NumDF"])


def test_ddf_wald_tables():
    r = mb.fit(SLEEP, load_data("sleepstudy"), ddf="wald")
    assert r.ddf == "wald"
    table = r.coef_table()
    assert list(table.columns) == ["Estimate", "Std. Error", "df", "z value", "Pr(>|z|)"]
    assert table["df"].isna().all()
    z = table["z value"].to_numpy()
    np.testing.assert_allclose(table["Pr(>|z|)"], 2 * stats.norm.sf(np.abs(z)), rtol=1e-12)
    np.testing.assert_allclose(r.pvalues, table["Pr(>|z|)"], rtol=0)
    assert r.pvalues.name == "Pr(>|z|)" and r.tvalues.name == "z value"
    tab = r.anova()
    assert np.isinf(tab["DenDF"]).all()
    assert tab.loc["Days", "Pr(>F)"] == pytest.approx(table.loc["Days", "Pr(>|z|)"], rel=1e-9)
    # Either ddf on demand, whatever the fit's default.
    sat = r.coef_table("satterthwaite")
    assert "t value" in sat.columns and np.all(np.isfinite(sat["df"]))
    assert "Wald z tests" in r.summary() and "z value" in r.summary()


def test_ddf_changes_pvalues_and_summary():
    data = load_data("sleepstudy")
    sat = mb.fit(SLEEP, data)
    wald = mb.fit(SLEEP, data, ddf="wald")
    assert np.all(sat.pvalues.to_numpy() > wald.pvalues.to_numpy())
    assert np.all(sat.conf_int()["upper"] > wald.conf_int()["upper"])
    np.testing.assert_allclose(sat.tvalues, wald.tvalues, rtol=0)
    text = sat.summary()
    assert "Satterthwaite" in text and "t value" in text and "Pr(>|t|)" in text
    assert " df " in text.split("Fixed effects")[1]


@pytest.mark.parametrize("bad", ["bogus", "", None, 3])
def test_ddf_validation(bad):
    data = load_data("sleepstudy")
    with pytest.raises(ValueError, match="ddf"):
        mb.fit(SLEEP, data, ddf=bad)
    r = mb.fit(SLEEP, data)
    with pytest.raises(ValueError, match="ddf"):
        r.coef_table(bad if bad is not None else "nope")
    with pytest.raises(ValueError, match="ddf"):
        r.anova(bad if bad is not None else "nope")


def test_ddf_spellings():
    assert inference.check_ddf("Satterthwaite") == "satterthwaite"
    assert inference.check_ddf("WALD") == "wald"
    assert inference.check_ddf("Kenward-Roger") == "kenward-roger"
    assert inference.check_ddf("KR") == "kenward-roger"


KR_CASES = [c for c in CASES if c["REML"]]


@pytest.mark.parametrize("case", KR_CASES, ids=[c["id"] for c in KR_CASES])
def test_kenward_roger_matches_pbkrtest(case, fits):
    r = fits(case)
    table = r.coef_table("kenward-roger")
    assert list(table.columns) == ["Estimate", "Std. Error", "df", "t value", "Pr(>|t|)"]
    np.testing.assert_allclose(table["df"], _vec(case["kr_df"]), rtol=1e-4)
    np.testing.assert_allclose(table["Std. Error"], _vec(case["kr_se"]), rtol=1e-4)
    _check_p(table["Pr(>|t|)"], case["kr_p"])
    # The adjusted covariance is at least the unadjusted one.
    assert np.all(table["Std. Error"].to_numpy() >= r.bse.to_numpy() * (1 - 1e-12))


def test_kenward_roger_as_the_fits_ddf():
    data = load_data("sleepstudy")
    r = mb.fit(SLEEP, data, ddf="kenward-roger")
    assert r.ddf == "kenward-roger"
    table = r.coef_table()
    np.testing.assert_allclose(table["df"], [17.0, 17.0], rtol=1e-8)
    np.testing.assert_allclose(r.pvalues, table["Pr(>|t|)"], rtol=0)
    np.testing.assert_allclose(r.tvalues, table["t value"], rtol=0)
    ci = r.conf_int()
    q = stats.t.ppf(0.975, table["df"])
    np.testing.assert_allclose(ci["upper"], table["Estimate"] + q * table["Std. Error"], rtol=1e-12)
    assert "Kenward-Roger" in r.summary()
    assert r.anova().loc["Days", "DenDF"] == pytest.approx(r.coef_table().loc["Days", "df"])
    assert list(r.anova("satterthwaite").index) == ["Days"]


def test_kenward_roger_needs_reml():
    data = load_data("sleepstudy")
    with pytest.raises(ValueError, match="REML"):
        mb.fit(SLEEP, data, REML=False, ddf="kenward-roger")
    ml = mb.fit(SLEEP, data, REML=False)
    with pytest.raises(ValueError, match="REML"):
        ml.coef_table("kenward-roger")


def test_result_stays_immutable_and_cached():
    r = mb.fit(SLEEP, load_data("sleepstudy"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.ddf = "wald"
    a = r.coef_table()
    a.iloc[0, 0] = -1.0  # a copy: the cache is untouched
    assert r.coef_table().iloc[0, 0] == pytest.approx(r.beta[0])
    assert r._satterthwaite is r._satterthwaite


def test_hessian_matches_the_deviance():
    """The Hessian's sigma entries are exact; its theta block agrees with plain differences."""
    r = mb.fit(SLEEP, load_data("sleepstudy"), REML=False)
    ws = r.model.workspace
    sat = r._satterthwaite
    # The deviance at (theta, sigma-hat) is the fit's objective.
    assert inference.deviance(ws, r.theta, r.sigma) == pytest.approx(r.objective, rel=1e-12)
    # At the optimum the gradient in sigma is zero and H is positive definite.
    assert np.all(np.linalg.eigvalsh(sat.hessian) > 0)
    h = 1e-3 * r.sigma
    f = [inference.deviance(ws, r.theta, r.sigma + s * h) for s in (-1, 0, 1)]
    assert (f[0] - 2 * f[1] + f[2]) / h**2 == pytest.approx(sat.hessian[-1, -1], rel=1e-5)


def test_expected_information_agrees_with_observed_at_a_fit():
    """A model from parameters uses the expected information; near a fit the two agree."""
    data = load_data("sleepstudy")
    r = mb.fit(SLEEP, data)
    e = inference.Satterthwaite.expected(r)
    np.testing.assert_allclose(e.A, r._satterthwaite.A, rtol=1e-3, atol=1e-6)
    np.testing.assert_allclose(e.df_coefficients(), r.coef_table()["df"], rtol=1e-3)


def test_model_from_parameters_has_pvalues():
    data = load_data("sleepstudy")
    r = mb.fit(SLEEP, data)
    m = mb.model(SLEEP, data.drop(columns="Reaction"), beta=r.beta, sigma=r.sigma, theta=r.theta)
    assert m.from_parameters and m.ddf == "satterthwaite"
    table = m.coef_table()
    np.testing.assert_allclose(table["df"], [17.0, 17.0], rtol=1e-6)
    assert np.all((m.pvalues > 0) & (m.pvalues < 1e-4))
    assert "t value" in m.summary()
    assert list(m.anova().index) == ["Days"]


def test_intercept_only_anova_is_empty():
    r = mb.fit("Yield ~ 1 + (1|Batch)", load_data("dyestuff"))
    tab = r.anova()
    assert tab.empty and list(tab.columns) == [
        "Sum Sq",
        "Mean Sq",
        "NumDF",
        "DenDF",
        "F value",
        "Pr(>F)",
    ]


def test_fstat_ddf_combination():
    assert inference._fstat_ddf(np.array([10.0])) == 10.0
    assert inference._fstat_ddf(np.array([7.0, 7.0])) == 7.0
    assert inference._fstat_ddf(np.array([1.5, 30.0])) == 2.0
    nu = np.array([10.0, 20.0])
    E = np.sum(nu / (nu - 2))
    assert inference._fstat_ddf(nu) == pytest.approx(2 * E / (E - 2))


def test_factor_fit_anova_with_several_terms():
    """A crossed-factor model: every term's F and df are finite; df below n."""
    data = load_data("cake")
    r = mb.fit("angle ~ recipe + temp + (1|recipe:replicate)", data)
    tab = r.anova()
    assert list(tab.index) == ["recipe", "temp"]
    assert np.all(np.isfinite(tab.to_numpy()))
    assert np.all(tab["DenDF"] < len(data))
    assert isinstance(tab, pd.DataFrame)


def test_df_of_a_refit_use_its_own_response():
    """A result built for another response of the same model (a bootstrap or power refit)
    gets that response's df, the same as a fresh fit to it."""
    from mixboot.refit import refit_responses
    from mixboot.result import build_result

    data = mb.datasets.load("crossed")
    formula = "diameter ~ 1 + (1 | plate) + (1 | sample)"
    fit = mb.fit(formula, data)
    y = mb.simulate(fit, 1, seed=3)[:, 0]
    rb = refit_responses(fit.model, y[:, None], start=fit.theta)
    refit = build_result(fit.model, rb.theta[0], fit.optsum, y=y)
    fresh = mb.fit(formula, data.assign(diameter=y), start=fit.theta)
    np.testing.assert_allclose(refit.coef_table()["df"], fresh.coef_table()["df"], rtol=1e-5)
    assert not np.allclose(refit.coef_table()["df"], fit.coef_table()["df"], rtol=1e-3)


def test_kenward_roger_on_a_balanced_one_way_design_has_no_zero_division():
    """One variance parameter in a balanced design: pbkrtest's 0/0 ratio is 1, df = groups - 2."""
    d = mb.design.nested(groups=6, per_group=5, between={"treatment": [0.0, 1.0]}, group="subject")
    m = mb.model(
        "y ~ treatment + (1 | subject)",
        d,
        beta={"(Intercept)": 0, "treatment": 0.8},
        sigma=1.0,
        re={"subject": 0.7},
    )
    Y = mb.simulate(m, 30, seed=8)
    for j in range(30):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            r = mb.fit("y ~ treatment + (1 | subject)", d.assign(y=Y[:, j]), ddf="kenward-roger")
        np.testing.assert_allclose(r.coef_table()["df"], [4.0, 4.0], rtol=1e-8)


def test_kenward_roger_anova_agrees_with_its_coefficient_test():
    """A 1-df term: F is t^2 of the Kenward-Roger coefficient test, on the same df and p."""
    data = mb.datasets.load("reaction")
    fit = mb.fit("Reaction ~ 1 + Days + (1 + Days | Subject)", data, ddf="kenward-roger")
    row = fit.anova().loc["Days"]
    coef = fit.coef_table().loc["Days"]
    assert row["F value"] == pytest.approx(coef["t value"] ** 2, rel=1e-10)
    assert row["DenDF"] == pytest.approx(coef["df"], rel=1e-10)
    assert row["Pr(>F)"] == pytest.approx(coef["Pr(>|t|)"], rel=1e-8)
    assert row["NumDF"] == 1
