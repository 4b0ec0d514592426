"""fit(): the shorthand arguments, coding of predictors and groups, and the result object."""

from __future__ import annotations

import dataclasses
import math
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import mixboot as mb
from conftest import load_data
from mixboot.spec import build_spec

SLEEP = "Reaction ~ 1 + Days + (1 + Days|Subject)"


def assert_same_fit(a, b, rtol=1e-10, theta_atol=1e-12):
    assert list(a.fe_params.index) == list(b.fe_params.index)
    np.testing.assert_allclose(a.theta, b.theta, rtol=rtol, atol=theta_atol)
    np.testing.assert_allclose(a.beta, b.beta, rtol=rtol, atol=1e-12)
    assert a.sigma == pytest.approx(b.sigma, rel=rtol)
    assert a.objective == pytest.approx(b.objective, rel=rtol)


@pytest.fixture(scope="module")
def sleep_fit():
    return mb.fit(SLEEP, load_data("sleepstudy"), REML=True)


# -- shorthand and coding ---------------------------------------------------------


def test_groups_string_equals_explicit_intercept():
    df = load_data("sleepstudy")
    short = mb.fit("Reaction ~ 1 + Days", df, groups="Subject")
    explicit = mb.fit("Reaction ~ 1 + Days + (1|Subject)", df)
    assert_same_fit(short, explicit)
    assert short.ngroups == {"Subject": 18}
    assert short.spec.n_theta == 1


def test_groups_list_gives_crossed_intercepts():
    df = load_data("penicillin")
    short = mb.fit("diameter ~ 1", df, groups=["plate", "sample"])
    explicit = mb.fit("diameter ~ 1 + (1|plate) + (1|sample)", df)
    assert_same_fit(short, explicit)
    assert short.ngroups == {"plate": 24, "sample": 6}
    assert [t.expr for t in short.spec.terms] == ["1", "1"]


def test_groups_with_a_bar_in_the_formula_is_an_error():
    df = load_data("sleepstudy")
    with pytest.raises(mb.FormulaError, match="groups="):
        mb.fit("Reaction ~ Days + (1|Subject)", df, groups="Subject")


CAKE = "angle ~ recipe + temp + (1|recipe:replicate)"


def test_sum_contrasts_code_plus_minus_one():
    cake = load_data("cake")
    spec = build_spec(CAKE, cake, contrasts={"recipe": "sum"})
    assert spec.fe_names == ("(Intercept)", "recipe1", "recipe2", "temp")
    coded = spec.X[:, 1:3]
    # Balanced data: each sum-coded column sums to zero.
    np.testing.assert_allclose(coded.sum(axis=0), 0.0, atol=1e-12)
    recipe = spec.data["recipe"].to_numpy()
    np.testing.assert_array_equal(
        coded[recipe == "A"], np.tile([1.0, 0.0], ((recipe == "A").sum(), 1))
    )
    np.testing.assert_array_equal(
        coded[recipe == "B"], np.tile([0.0, 1.0], ((recipe == "B").sum(), 1))
    )
    np.testing.assert_array_equal(coded[recipe == "C"], -np.ones(((recipe == "C").sum(), 2)))


@pytest.mark.parametrize("REML", [False, True], ids=["ML", "REML"])
def test_sum_contrasts_change_the_coefficients_not_the_fit(REML):
    cake = load_data("cake")
    treat = mb.fit(CAKE, cake, REML=REML)
    summ = mb.fit(CAKE, cake, REML=REML, contrasts={"recipe": "sum"})
    assert list(treat.fe_params.index) == ["(Intercept)", "recipeB", "recipeC", "temp"]
    if not REML:
        # The REML criterion shifts by log|det| of the reparametrization; ML's does not.
        assert summ.objective == pytest.approx(treat.objective, rel=1e-9)
    np.testing.assert_allclose(summ.theta, treat.theta, atol=1e-5)
    assert summ.sigma == pytest.approx(treat.sigma, rel=1e-6)
    np.testing.assert_allclose(summ.fittedvalues, treat.fittedvalues, rtol=1e-7)
    # Intercept under sum coding = treatment intercept + mean of the recipe effects.
    b = treat.fe_params
    assert summ.fe_params["(Intercept)"] == pytest.approx(
        b["(Intercept)"] + (b["recipeB"] + b["recipeC"]) / 3, rel=1e-7
    )
    assert summ.fe_params["recipe1"] == pytest.approx(-(b["recipeB"] + b["recipeC"]) / 3, rel=1e-6)


def test_formulaic_sum_coding_in_the_formula():
    cake = load_data("cake")
    by_arg = mb.fit(CAKE, cake, contrasts={"recipe": "sum"})
    in_formula = mb.fit("angle ~ C(recipe, contr.sum) + temp + (1|recipe:replicate)", cake)
    np.testing.assert_array_equal(in_formula.spec.X, by_arg.spec.X)
    assert in_formula.spec.fe_names == ("(Intercept)", "recipe1", "recipe2", "temp")
    assert_same_fit(in_formula, by_arg)


def test_boolean_predictor_is_a_zero_one_column():
    df = load_data("sleepstudy")
    df["late"] = df["Days"] >= 5
    df["late01"] = df["late"].astype(float)
    r_bool = mb.fit("Reaction ~ late + (1|Subject)", df)
    r_num = mb.fit("Reaction ~ late01 + (1|Subject)", df)
    assert r_bool.spec.fe_names[1].startswith("late")
    np.testing.assert_array_equal(r_bool.spec.X[:, 1], df["late01"].to_numpy())
    np.testing.assert_allclose(r_bool.beta, r_num.beta, rtol=1e-10)
    assert r_bool.objective == pytest.approx(r_num.objective, rel=1e-12)


def test_boolean_response_is_accepted():
    df = load_data("sleepstudy")
    df["slow"] = df["Reaction"] > df["Reaction"].median()
    r = mb.fit("slow ~ Days + (1|Subject)", df)
    np.testing.assert_array_equal(r.y, df["slow"].to_numpy(dtype=float))


def test_string_predictor_gets_treatment_coding():
    df = load_data("sleepstudy")
    df["half"] = np.where(df["Days"] % 2 == 0, "even", "odd")
    df["odd01"] = (df["Days"] % 2 == 1).astype(float)
    r_str = mb.fit("Reaction ~ Days + half + (1|Subject)", df)
    r_num = mb.fit("Reaction ~ Days + odd01 + (1|Subject)", df)
    assert list(r_str.fe_params.index) == ["(Intercept)", "Days", "halfodd"]
    np.testing.assert_allclose(r_str.beta, r_num.beta, rtol=1e-10)


def test_integer_string_and_categorical_groups_fit_the_same():
    df = load_data("sleepstudy")
    assert pd.api.types.is_integer_dtype(df["Subject"])
    as_str = df.assign(Subject=df["Subject"].map(lambda s: f"S{s}"))
    # Categories in reverse order, with an unused one: neither may change the fit.
    cats = sorted(df["Subject"].unique(), reverse=True) + [999]
    as_cat = df.assign(Subject=pd.Categorical(df["Subject"], categories=cats))
    fits = [mb.fit(SLEEP, d) for d in (df, as_str, as_cat)]
    # The same model; only the order of the levels (so of floating-point sums) differs.
    for other in fits[1:]:
        assert_same_fit(other, fits[0], rtol=1e-6, theta_atol=1e-6)
        assert other.objective == pytest.approx(fits[0].objective, rel=1e-12)
    np.testing.assert_allclose(
        fits[2].ranef["Subject"].loc[fits[0].ranef["Subject"].index],
        fits[0].ranef["Subject"],
        rtol=1e-4,
    )
    assert all(f.ngroups == {"Subject": 18} for f in fits)
    assert 999 not in fits[2].ranef["Subject"].index


# -- the result object -----------------------------------------------------------------------


def test_result_is_immutable(sleep_fit):
    with pytest.raises(dataclasses.FrozenInstanceError):
        sleep_fit.sigma = 1.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        sleep_fit.theta = np.zeros(3)
    for arr in (sleep_fit.theta, sleep_fit.beta, sleep_fit.vcov_unscaled, *sleep_fit.u):
        assert not arr.flags.writeable
        with pytest.raises(ValueError, match="read-only"):
            arr[0] = 0.0


def test_conf_int_is_wald(sleep_fit):
    wald = mb.fit(SLEEP, load_data("sleepstudy"), REML=True, ddf="wald")
    ci = wald.conf_int()
    est, se = wald.fe_params, wald.bse
    np.testing.assert_allclose(ci["lower"], est - 1.959964 * se, rtol=1e-7)
    np.testing.assert_allclose(ci["upper"], est + 1.959964 * se, rtol=1e-7)
    ci90 = wald.conf_int(0.9)
    np.testing.assert_allclose(ci90["upper"] - est, 1.644854 * se, rtol=1e-6)
    with pytest.raises(ValueError, match="level"):
        wald.conf_int(1.5)


def test_conf_int_uses_satterthwaite_t(sleep_fit):
    """The default intervals use t quantiles with each coefficient's Satterthwaite df."""
    ci = sleep_fit.conf_int()
    est, se, df = sleep_fit.fe_params, sleep_fit.bse, sleep_fit.coef_table()["df"]
    q = stats.t.ppf(0.975, df)
    np.testing.assert_allclose(ci["upper"], est + q * se, rtol=1e-12)
    np.testing.assert_allclose(ci["lower"], est - q * se, rtol=1e-12)
    assert np.all(q > 1.96)
    with pytest.raises(ValueError, match="level"):
        sleep_fit.conf_int(0)


def test_standard_errors_are_sqrt_of_vcov(sleep_fit):
    vc = sleep_fit.vcov
    np.testing.assert_allclose(sleep_fit.bse, np.sqrt(np.diag(vc)), rtol=1e-14)
    np.testing.assert_allclose(vc.to_numpy(), vc.to_numpy().T, rtol=1e-12)


def test_pvalues_are_two_sided_normal(sleep_fit):
    wald = mb.fit(SLEEP, load_data("sleepstudy"), REML=True, ddf="wald")
    z = wald.fe_params / wald.bse
    np.testing.assert_allclose(wald.tvalues, z, rtol=1e-14)
    assert wald.tvalues.name == "z value"
    want = [math.erfc(abs(v) / math.sqrt(2)) for v in z]
    np.testing.assert_allclose(wald.pvalues, want, rtol=1e-10)


def test_pvalues_are_two_sided_satterthwaite_t(sleep_fit):
    t = sleep_fit.fe_params / sleep_fit.bse
    np.testing.assert_allclose(sleep_fit.tvalues, t, rtol=1e-14)
    assert sleep_fit.tvalues.name == "t value" and sleep_fit.pvalues.name == "Pr(>|t|)"
    df = sleep_fit.coef_table()["df"]
    np.testing.assert_allclose(sleep_fit.pvalues, 2 * stats.t.sf(np.abs(t), df), rtol=1e-12)


def test_pvalue_of_a_small_effect():
    df = load_data("sleepstudy")
    df["noise"] = np.random.default_rng(4).normal(size=len(df))
    r = mb.fit("Reaction ~ Days + noise + (1|Subject)", df)
    t = r.tvalues["noise"]
    nu = r.coef_table()["df"]["noise"]
    assert 100 < nu < 180  # a within-subject covariate: df near n - groups
    assert r.pvalues["noise"] == pytest.approx(2 * stats.t.sf(abs(t), nu), rel=1e-10)
    assert 0.01 < r.pvalues["noise"] <= 1.0
    wald = r.coef_table("wald")
    assert wald.loc["noise", "Pr(>|z|)"] == pytest.approx(2 * stats.norm.cdf(-abs(t)), rel=1e-10)


def test_summary_text(sleep_fit):
    text = sleep_fit.summary()
    assert "Random effects" in text
    assert "Fixed effects" in text
    assert "REML" in text
    assert SLEEP in text
    lines = text.splitlines()
    for name, est in sleep_fit.fe_params.items():
        row = [ln for ln in lines if ln.startswith(name + " ")]
        assert len(row) == 1, name
        assert f"{est:.4f}" in row[0]
    assert any(ln.startswith("Subject") for ln in lines)
    assert any(ln.startswith("Residual") for ln in lines)


def test_aic_bic_formulas(sleep_fit):
    # 2 fixed effects, 3 theta, sigma: 6 parameters, as lme4 counts them.
    k = 6
    ll = sleep_fit.loglik
    assert ll == pytest.approx(-0.5 * sleep_fit.objective, rel=1e-15)
    assert sleep_fit.aic == pytest.approx(-2 * ll + 2 * k, rel=1e-14)
    assert sleep_fit.bic == pytest.approx(-2 * ll + k * np.log(180), rel=1e-14)
    # lme4: AIC(fm1) = 1755.628, BIC(fm1) = 1774.786 for the REML sleepstudy fit.
    assert sleep_fit.aic == pytest.approx(1755.628, abs=1e-3)
    assert sleep_fit.bic == pytest.approx(1774.786, abs=1e-3)


def test_ml_deviance_equals_objective():
    r = mb.fit(SLEEP, load_data("sleepstudy"), REML=False)
    assert r.deviance == pytest.approx(r.objective, rel=1e-10)


def test_fitted_plus_resid_is_y(sleep_fit):
    np.testing.assert_allclose(sleep_fit.fittedvalues + sleep_fit.resid, sleep_fit.y, rtol=1e-13)
    # fitted = X beta + Z b, with Z built independently from the data.
    df = load_data("sleepstudy")
    b = sleep_fit.ranef["Subject"].loc[df["Subject"]].to_numpy()
    want = sleep_fit.beta[0] + sleep_fit.beta[1] * df["Days"] + b[:, 0] + b[:, 1] * df["Days"]
    np.testing.assert_allclose(sleep_fit.fittedvalues, want, rtol=1e-10)


@pytest.mark.filterwarnings("error")
def test_ranef_one_frame_per_factor():
    sleep = mb.fit(SLEEP, load_data("sleepstudy"))
    assert list(sleep.ranef) == ["Subject"]
    frame = sleep.ranef["Subject"]
    assert frame.shape == (18, 2)
    assert list(frame.columns) == ["(Intercept)", "Days"]
    assert frame.index.name == "Subject"
    # Conditional modes of a random-effect term sum to about zero over the levels.
    np.testing.assert_allclose(frame.sum(), 0.0, atol=1e-6 * frame.abs().max().max())

    pen = mb.fit("diameter ~ 1 + (1|plate) + (1|sample)", load_data("penicillin"))
    assert {k: v.shape for k, v in pen.ranef.items()} == {"plate": (24, 1), "sample": (6, 1)}

    zc = mb.fit("Reaction ~ 1 + Days + (1 + Days||Subject)", load_data("sleepstudy"))
    assert list(zc.ranef) == ["Subject"]
    assert zc.ranef["Subject"].shape == (18, 2)


@pytest.mark.filterwarnings("error")
def test_ranef_of_two_terms_with_the_same_column():
    r = mb.fit("Reaction ~ Days + (1|Subject) + (1|Subject)", load_data("sleepstudy"))
    frame = r.ranef["Subject"]
    assert list(frame.columns) == ["(Intercept)", "(Intercept)_1"]
    assert frame.shape == (18, 2)
    np.testing.assert_allclose(frame.iloc[:, 0], r.u[0][:, 0] * r.theta[0], rtol=1e-12)
    np.testing.assert_allclose(frame.iloc[:, 1], r.u[1][:, 0] * r.theta[1], rtol=1e-12)


def test_optsum_records_the_optimization(sleep_fit):
    opt = sleep_fit.optsum
    assert opt.evaluations > 0
    assert opt.returncode in {"FTOL_REACHED", "XTOL_REACHED", "SUCCESS", "STOPVAL_REACHED"}
    assert sleep_fit.converged
    assert opt.elapsed > 0
    assert opt.fitlog.shape == (opt.evaluations, sleep_fit.spec.n_theta + 1)
    assert opt.fmin == pytest.approx(sleep_fit.objective, rel=1e-12)
    assert opt.fitlog[:, -1].min() >= opt.fmin - 1e-8 * abs(opt.fmin)
    np.testing.assert_array_equal(opt.theta_start, [1.0, 0.0, 1.0])


def test_maxeval_gives_convergence_warning():
    df = load_data("sleepstudy")
    with pytest.warns(mb.ConvergenceWarning, match="MAXEVAL_REACHED"):
        r = mb.fit(SLEEP, df, optimizer={"optimizer": "LN_BOBYQA", "maxeval": 3})
    assert not r.converged
    assert r.optsum.evaluations == 3
    assert r.optsum.fitlog.shape[0] == 3
    assert "did not converge" in r.summary()


def test_a_converged_fit_warns_nothing():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mb.fit(SLEEP, load_data("sleepstudy"))


def test_start_values_are_used():
    df = load_data("sleepstudy")
    r = mb.fit(SLEEP, df, start=[0.9, 0.0, 0.2])
    np.testing.assert_array_equal(r.optsum.theta_start, [0.9, 0.0, 0.2])
    default = mb.fit(SLEEP, df)
    np.testing.assert_allclose(r.theta, default.theta, atol=1e-3)
    assert r.objective == pytest.approx(default.objective, rel=1e-9)


# -- the two optimizers ---------------------------------------------------------------

OPTIMIZER_CASES = [
    ("sleepstudy", SLEEP, True),
    ("sleepstudy", "Reaction ~ 1 + Days + (1 + Days||Subject)", False),
    ("penicillin", "diameter ~ 1 + (1|plate) + (1|sample)", True),
    ("pastes", "strength ~ 1 + (1|batch) + (1|batch:cask)", False),  # singular by ML
]


@pytest.mark.parametrize("name, formula, REML", OPTIMIZER_CASES)
def test_newton_and_bobyqa_reach_the_same_optimum(name, formula, REML):
    df = load_data(name)
    newton = mb.fit(formula, df, REML=REML)
    bobyqa = mb.fit(formula, df, REML=REML, optimizer={"optimizer": "LN_BOBYQA"})
    assert newton.optsum.optimizer == "newton" and bobyqa.optsum.optimizer == "LN_BOBYQA"
    assert newton.converged and bobyqa.converged
    # Newton stops on a predicted decrease below 1e-12 relative; BOBYQA on its
    # ftol: neither may be worse than the other by more than lme4's tolerance.
    assert newton.objective <= bobyqa.objective + 1e-8 * abs(bobyqa.objective)
    np.testing.assert_allclose(newton.theta, bobyqa.theta, atol=2e-4)
    assert newton.is_singular == bobyqa.is_singular
    assert newton.optsum.fitlog.shape == (newton.optsum.evaluations, newton.spec.n_theta + 1)


def test_a_stalled_newton_run_hands_over_to_bobyqa(monkeypatch):
    import mixboot.optimize as opt

    def stalls(evaluate, theta0, *, ftol_rel, max_evals=None, **options):
        f = evaluate(theta0, np.arange(len(theta0)))
        return theta0.copy(), f, np.zeros(len(theta0), dtype=bool), np.ones(len(theta0), int)

    monkeypatch.setattr(opt, "newton_batch", stalls)
    df = load_data("sleepstudy")
    r = mb.fit(SLEEP, df)
    assert r.optsum.optimizer == "newton+LN_BOBYQA" and r.converged
    ref = mb.fit(SLEEP, df, optimizer={"optimizer": "LN_BOBYQA"})
    assert r.objective == pytest.approx(ref.objective, rel=1e-10)
    with pytest.warns(mb.ConvergenceWarning, match="NEWTON_STALLED"):
        only = mb.fit(SLEEP, df, optimizer={"optimizer": "newton"})
    assert not only.converged


def test_unknown_optimizer_name_is_an_error():
    with pytest.raises(ValueError, match="optimizer must be one of"):
        mb.fit(SLEEP, load_data("sleepstudy"), optimizer={"optimizer": "lbfgs"})


@pytest.mark.parametrize("fixed", ["1 + Days", "0 + Days", "Days - 1", "Days + 1", "1"])
def test_simple_numeric_designs_match_formulaic(fixed):
    from formulaic import model_matrix

    df = load_data("sleepstudy")
    spec = build_spec(f"Reaction ~ {fixed} + (1|Subject)", df)
    mm = model_matrix(fixed, df, ensure_full_rank=True)
    np.testing.assert_array_equal(spec.X, np.asarray(mm, dtype=float))
    assert list(spec.fixed_spec.column_names) == list(mm.columns)  # made on demand


def test_singular_fit_warns_once_and_bootstrap_refits_do_not():
    # every group has the same values: the between-group variance is exactly zero
    flat = pd.DataFrame({"y": np.tile([1.0, 2.5, 2.0, 4.0], 6), "g": np.repeat(range(6), 4)})
    with pytest.warns(mb.SingularFitWarning, match="boundary \\(singular\\) fit") as record:
        fit = mb.fit("y ~ 1 + (1 | g)", flat)
    assert fit.is_singular
    assert sum(issubclass(w.category, mb.SingularFitWarning) for w in record) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error", mb.SingularFitWarning)
        boot = mb.bootMer(fit, B=40, seed=1)
    assert boot.n_singular > 0
    with warnings.catch_warnings():
        warnings.simplefilter("error", mb.SingularFitWarning)
        assert not mb.fit(
            "Reaction ~ Days + (1 | Subject)", mb.datasets.load("reaction")
        ).is_singular


def test_a_model_without_fixed_effects_fits_as_lme4():
    """``y ~ 0 + (1|g)``: no X at all (the tail holds only y).

    lme4 1.1-31, ``lmer(Yield ~ 0 + (1|Batch), Dyestuff, REML = FALSE)``: deviance
    370.078901678456, theta 30.86146826, first two modes 1504.684033, 1527.679204.
    """
    r = mb.fit("Yield ~ 0 + (1|Batch)", load_data("dyestuff"), REML=False)
    assert r.objective == pytest.approx(370.078901678456, abs=1e-6)
    assert r.theta[0] == pytest.approx(30.86146826, rel=1e-5)
    modes = r.ranef["Batch"].to_numpy().ravel()[:2]
    assert modes == pytest.approx([1504.684033, 1527.679204], rel=1e-6)
