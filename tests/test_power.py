"""mb.power and mb.power_curve: correctness against closed forms, reproducibility, failures."""

import dataclasses
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import mixboot as mb
from mixboot import refit
from mixboot.power import clopper_pearson, model_at_size

TWO_ARM = "y ~ treatment + (1 | subject)"


def two_arm(subjects, per_subject=5, effect=0.5, sd_subject=1.0, sigma=1.0):
    """Half the subjects in each arm (alternating), ``per_subject`` observations each."""
    d = mb.design.nested(
        groups=subjects, per_group=per_subject, between={"treatment": [0.0, 1.0]}, group="subject"
    )
    return mb.model(
        TWO_ARM,
        d,
        beta={"(Intercept)": 1.0, "treatment": effect},
        sigma=sigma,
        re={"subject": sd_subject},
    )


@pytest.fixture(scope="module")
def small():
    return two_arm(40)


@pytest.fixture(scope="module")
def three_level():
    d = mb.design.crossed(subjects=30, items=8, within={"cond": ["a", "b", "c"]})
    return mb.model(
        "y ~ cond + (1 | subject) + (1 | item)",
        d,
        beta=[0.0, 0.15, 0.25],
        sigma=1.0,
        re={"subject": 0.6, "item": 0.4},
    )


def test_wald_power_matches_closed_form():
    """Balanced two-arm design: the Monte Carlo power agrees with the z-test formula.

    S subjects, S/2 per arm, m observations each, y = b0 + delta * treatment + u_s + e.
    The GLS estimate of delta is the difference of the two arms' averages of subject
    means (balanced data: GLS = OLS on subject means).  A subject mean has variance
    sd_s^2 + sigma^2 / m; each arm averages S/2 of them, so
        Var(delta_hat) = 2 (sd_s^2 + sigma^2 / m) / (S / 2) = 4 (sd_s^2 + sigma^2 / m) / S.
    With the variance known, the two-sided z test at level alpha rejects with
        P = Phi(delta / se - z) + Phi(-delta / se - z),   z = Phi^-1(1 - alpha / 2).
    Here S = 160, m = 4, sd_s = sigma = 1, delta = 0.35: se = sqrt(4 * 1.25 / 160)
    = 0.1768, delta / se = 1.980, P = 0.5080.  The variance is estimated, so delta_hat
    / se_hat is close to a noncentral t with S - 2 = 158 df; its exact rejection rate
    (0.5092) exceeds P by 0.0012, a seventh of the Monte Carlo SE
    sqrt(P (1 - P) / 4000) = 0.0079, so P is the reference and we allow 3.5 SEs.
    """
    S, m, delta = 160, 4, 0.35
    model = two_arm(S, per_subject=m, effect=delta)
    se = np.sqrt(4 * (1.0 + 1.0 / m) / S)
    np.testing.assert_allclose(model.bse["treatment"], se)  # the model's own Wald SE
    z = stats.norm.ppf(0.975)
    P = stats.norm.cdf(delta / se - z) + stats.norm.cdf(-delta / se - z)
    assert abs(P - 0.5080) < 1e-4
    nsim = 4000
    res = mb.power(model, "treatment", nsim=nsim, seed=20240601, method="wald")
    assert res.n_valid == nsim and res.n_failed == 0 and res.n_nonconverged == 0
    assert abs(res.power - P) < 3.5 * np.sqrt(P * (1 - P) / nsim)
    assert res.lower < res.power < res.upper


@pytest.mark.parametrize("k, n", [(0, 10), (10, 10), (3, 10), (613, 1000), (1, 1), (57, 200)])
def test_clopper_pearson_matches_scipy(k, n):
    ci = stats.binomtest(k, n).proportion_ci(0.95, method="exact")
    np.testing.assert_allclose(clopper_pearson(k, n), (ci.low, ci.high), rtol=1e-10, atol=1e-12)
    ci90 = stats.binomtest(k, n).proportion_ci(0.90, method="exact")
    np.testing.assert_allclose(
        clopper_pearson(k, n, 0.90), (ci90.low, ci90.high), rtol=1e-10, atol=1e-12
    )


def test_result_fields_and_interval(small):
    res = mb.power(small, "treatment", nsim=300, seed=3, method="wald")
    assert res.nsim == 300 and res.pvalues.shape == (300,) and res.alpha == 0.05
    assert res.n_significant == int(np.sum(res.pvalues < 0.05))
    assert res.power == res.n_significant / res.n_valid
    ci = stats.binomtest(res.n_significant, res.n_valid).proportion_ci(0.95, method="exact")
    np.testing.assert_allclose((res.lower, res.upper), (ci.low, ci.high))
    np.testing.assert_allclose(
        res.confint(0.8), clopper_pearson(res.n_significant, res.n_valid, 0.8)
    )
    assert res.beta == {"(Intercept)": 1.0, "treatment": 0.5} and res.sigma == 1.0
    np.testing.assert_allclose(res.theta, [1.0])
    assert res.columns == ("treatment",) and res.df == 1 and res.method == "wald"
    assert "power" in repr(res) and "treatment" in repr(res)
    text = res.summary()
    for piece in (
        "Wald test of coefficient 'treatment'",
        "treatment = 0.5",
        "subject (Intercept) sd 1",
        "residual sd 1",
        "Clopper-Pearson",
        "300 valid",
        "seed 3",
    ):
        assert piece in text, piece
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.power = 1.0


def test_pvalues_equal_those_of_a_fit(small, three_level):
    """Replicate 0's p-value is the Wald p-value of mb.fit on simulated response 0."""
    y = mb.simulate(small, 1, seed=9)[:, 0]
    fit = mb.fit(TWO_ARM, small.spec.data.assign(y=y), ddf="wald")
    res = mb.power(small, "treatment", nsim=1, seed=9, method="wald")
    np.testing.assert_allclose(res.pvalues[0], fit.pvalues["treatment"], rtol=1e-5)
    # A 3-level factor as a term: the Wald chi-square with 2 df from the fit's vcov.
    y = mb.simulate(three_level, 1, seed=9)[:, 0]
    fit = mb.fit(three_level.formula, three_level.spec.data.assign(y=y))
    b = fit.fe_params[["condb", "condc"]].to_numpy()
    V = fit.vcov.loc[["condb", "condc"], ["condb", "condc"]].to_numpy()
    p = stats.chi2.sf(b @ np.linalg.solve(V, b), 2)
    res = mb.power(three_level, "cond", nsim=1, seed=9, method="wald")
    assert res.columns == ("condb", "condc") and res.df == 2
    np.testing.assert_allclose(res.pvalues[0], p, rtol=1e-5)
    assert "term 'cond' (2 columns)" in res.summary()


def test_term_test_holds_its_level_under_the_null(three_level):
    """With no effect of cond the 2-df Wald test rejects about alpha of the time."""
    null = mb.model(
        three_level.formula,
        three_level.spec.data,
        beta=[0.0, 0.0, 0.0],
        sigma=1.0,
        theta=three_level.theta,
    )
    res = mb.power(null, "cond", nsim=1500, seed=4, method="wald")
    assert abs(res.power - 0.05) < 3.5 * np.sqrt(0.05 * 0.95 / 1500)
    # ... and has power against the alternative, more than either coefficient alone.
    both = mb.power(three_level, "cond", nsim=400, seed=4, method="wald").power
    assert both > mb.power(three_level, "condb", nsim=400, seed=4, method="wald").power
    assert mb.power(three_level, "cond[T.c]", nsim=400, seed=4).columns == ("condc",)


def test_reproducible_and_seed_recorded(small):
    a = mb.power(small, "treatment", nsim=200, seed=11)
    b = mb.power(small, "treatment", nsim=200, seed=11)
    np.testing.assert_array_equal(a.pvalues, b.pvalues)
    c = mb.power(small, "treatment", nsim=200, seed=12)
    assert not np.array_equal(a.pvalues, c.pvalues)
    # Replicate i does not depend on nsim: the first 50 of 200 are the 50 of a shorter run.
    np.testing.assert_array_equal(
        mb.power(small, "treatment", nsim=50, seed=11).pvalues, a.pvalues[:50]
    )
    d = mb.power(small, "treatment", nsim=60)
    np.testing.assert_array_equal(
        mb.power(small, "treatment", nsim=60, seed=d.seed).pvalues, d.pvalues
    )


def test_n_jobs_gives_identical_pvalues(small):
    one = mb.power(small, "treatment", nsim=600, seed=5, n_jobs=1)
    two = mb.power(small, "treatment", nsim=600, seed=5, n_jobs=2)
    np.testing.assert_array_equal(one.pvalues, two.pvalues)
    assert one.power == two.power


def test_failures_and_nonconvergence_are_excluded_and_counted(small, monkeypatch):
    """A refit that raises, one that does not converge and one with a NaN vcov.

    Each simulated response is recognized by its first value, so the expected
    replicates are known from mb.simulate (which uses the same streams).
    """
    nsim = 120
    Y = mb.simulate(small, nsim, seed=8)
    first, second = Y[0], Y[1]
    raise_at = first > np.quantile(first, 0.9)
    nonconv_at = ~raise_at & (second > np.quantile(second, 0.85))
    nan_at = ~raise_at & ~nonconv_at & (first < np.quantile(first, 0.05))
    real = refit.refit_responses

    def flaky(model, Yb, **kw):
        if np.any(Yb[0] > np.quantile(first, 0.9)):
            raise np.linalg.LinAlgError("simulated breakdown")
        rb = real(model, Yb, **kw)
        conv = rb.converged & ~(Yb[1] > np.quantile(second, 0.85))
        vc = rb.vcov_unscaled.copy()
        vc[Yb[0] < np.quantile(first, 0.05)] = np.nan
        return dataclasses.replace(rb, converged=conv, vcov_unscaled=vc)

    monkeypatch.setattr(refit, "refit_responses", flaky)
    with pytest.warns(RuntimeWarning) as record:
        res = mb.power(small, "treatment", nsim=nsim, seed=8, method="wald")
    messages = " ".join(str(w.message) for w in record)
    assert "failed" in messages and "did not converge" in messages
    assert res.n_failed == raise_at.sum() + nan_at.sum()
    assert res.n_nonconverged == nonconv_at.sum()
    assert res.n_valid == nsim - res.n_failed - res.n_nonconverged
    excluded = raise_at | nonconv_at | nan_at
    assert np.all(np.isnan(res.pvalues[excluded])) and np.all(np.isfinite(res.pvalues[~excluded]))
    assert res.power == np.mean(res.pvalues[~excluded] < 0.05)
    stages = res.failures.set_index("replicate")["stage"]
    assert set(stages.loc[np.flatnonzero(raise_at)]) == {"refit"}
    assert set(stages.loc[np.flatnonzero(nan_at)]) == {"statistic"}
    by_stage = res.failures.groupby("stage")["message"].apply(set)
    assert by_stage["refit"] == {"LinAlgError: simulated breakdown"}
    assert by_stage["statistic"] == {"the test statistic is not finite"}
    assert f"{res.n_failed} failed" in res.summary()


def test_singular_refits_are_counted_and_kept():
    tiny = two_arm(20, effect=0.3, sd_subject=0.05)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # singular fits are not a warning
        res = mb.power(tiny, "treatment", nsim=200, seed=2)
    assert res.n_singular > 20 and res.n_valid == 200
    assert res.singular.sum() == res.n_singular


def test_lrt_agrees_with_wald_on_a_large_design():
    model = two_arm(120, per_subject=4, effect=0.3)
    wald = mb.power(model, "treatment", nsim=800, seed=6, method="wald")
    lrt = mb.power(model, "treatment", nsim=800, seed=6, method="lrt")
    assert lrt.method == "lrt" and lrt.n_valid == 800
    # Same simulated data sets; for 480 observations the two tests' p-values nearly coincide.
    assert abs(wald.power - lrt.power) < 0.03
    z_wald, z_lrt = stats.norm.isf(wald.pvalues / 2), stats.norm.isf(lrt.pvalues / 2)
    assert np.corrcoef(z_wald, z_lrt)[0, 1] > 0.99
    assert "refitted by ML" in lrt.summary()


def test_parametric_bootstrap_method(small):
    pb = mb.power(small, "treatment", nsim=24, seed=3, method="pb", pb_B=49)
    lrt = mb.power(small, "treatment", nsim=24, seed=3, method="lrt")
    assert pb.pb_B == 49 and pb.n_valid == 24
    # p = (1 + hits) / (1 + valid): a multiple of 1/50 between 1/50 and 1.
    assert np.all(pb.pvalues >= 1 / 50) and np.all(pb.pvalues <= 1)
    np.testing.assert_allclose(pb.pvalues * 50, np.round(pb.pvalues * 50), atol=1e-9)
    # The bootstrap reference is close to chi-square(1) here: p-values track each other.
    assert np.corrcoef(pb.pvalues, lrt.pvalues)[0, 1] > 0.9
    again = mb.power(small, "treatment", nsim=24, seed=3, method="pb", pb_B=49, n_jobs=2)
    np.testing.assert_array_equal(pb.pvalues, again.pvalues)


def test_power_from_a_fit_uses_its_estimates(small):
    y = mb.simulate(small, 1, seed=1)[:, 0]
    fit = mb.fit(TWO_ARM, small.spec.data.assign(y=y))
    res = mb.power(fit, "treatment", nsim=100, seed=1)
    assert res.beta == dict(zip(fit.fe_params.index, fit.beta.tolist()))
    assert res.sigma == fit.sigma


def test_power_curve(small):
    curve = mb.power_curve(
        small, "treatment", along="subject", sizes=[10, 20, 40, 80], nsim=300, seed=1
    )
    t = curve.table
    assert list(t.columns[:6]) == ["size", "power", "lower", "upper", "n_valid", "n_failed"]
    assert list(t["size"]) == [10, 20, 40, 80]
    assert np.all(np.diff(t["power"]) > 0)
    assert np.all(t["lower"] <= t["power"]) and np.all(t["power"] <= t["upper"])
    # A point equals power() on the resized model with the same seed; size 10 keeps
    # the first 10 subjects, still 5 per arm.
    m10 = model_at_size(small, "subject", 10)
    assert m10.ngroups == {"subject": 10} and m10.spec.data["treatment"].sum() == 5 * 5
    np.testing.assert_array_equal(
        curve.results[0].pvalues, mb.power(m10, "treatment", nsim=300, seed=1).pvalues
    )
    assert "size" in repr(curve) and "Power curve along 'subject'" in curve.summary()
    # along defaults to the only grouping factor.
    same = mb.power_curve(small, "treatment", sizes=[10], nsim=300, seed=1)
    np.testing.assert_array_equal(same.results[0].pvalues, curve.results[0].pvalues)


def test_power_curve_plot(small):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curve = mb.power_curve(small, "treatment", sizes=[10, 30], nsim=50, seed=1)
    ax = curve.plot()
    assert ax.get_ylabel() == "power" and "subject" in ax.get_xlabel()
    fig, ax2 = plt.subplots()
    assert curve.plot(ax=ax2) is ax2
    plt.close("all")


def test_power_curve_from_a_fit_and_crossed_design(three_level):
    y = mb.simulate(three_level, 1, seed=2)[:, 0]
    fit = mb.fit(three_level.formula, three_level.spec.data.assign(y=y))
    curve = mb.power_curve(fit, "cond", along="item", sizes=[4, 12], nsim=100, seed=2)
    assert curve.results[1].ngroups == {"subject": 30, "item": 12}
    assert curve.results[0].beta == curve.results[1].beta
    with pytest.raises(ValueError, match="along is needed.*subject.*item"):
        mb.power_curve(fit, "cond", sizes=[4, 12], nsim=10)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (
            dict(test="nope"),
            ValueError,
            r"test 'nope' names no fixed-effect coefficient or term.*"
            r"coefficients: \['\(Intercept\)', 'treatment'\]",
        ),
        (dict(test=3), TypeError, "test must be"),
        (dict(alpha=0), ValueError, "alpha must be a number between 0 and 1"),
        (dict(alpha=1.0), ValueError, "alpha must be a number between 0 and 1"),
        (dict(alpha=1.5), ValueError, "alpha must be a number between 0 and 1"),
        (dict(nsim=0), ValueError, "nsim must be an integer >= 1"),
        (dict(nsim=2.5), ValueError, "nsim must be an integer >= 1"),
        (
            dict(method="score"),
            ValueError,
            r"method must be one of \['satterthwaite', 'kr', 'wald', 'lrt', 'pb'\]",
        ),
        (dict(n_jobs=0), ValueError, "n_jobs must be"),
        (dict(method="pb", pb_B=0), ValueError, "pb_B must be an integer >= 1"),
        (dict(show_progress="yes"), TypeError, "show_progress must be True or False"),
    ],
)
def test_bad_arguments(small, kwargs, error, message):
    args = dict(test="treatment", nsim=5) | kwargs
    with pytest.raises(error, match=message):
        mb.power(small, **args)


def test_bad_curve_arguments(small):
    with pytest.raises(TypeError, match="model_or_fit must be a fit"):
        mb.power(pd.DataFrame(), "x")
    with pytest.raises(ValueError, match="sizes must name at least one size"):
        mb.power_curve(small, "treatment", sizes=[], nsim=5)
    with pytest.raises(ValueError, match="sizes has duplicates"):
        mb.power_curve(small, "treatment", sizes=[10, 10], nsim=5)
    with pytest.raises(ValueError, match="each of sizes must be an integer >= 2"):
        mb.power_curve(small, "treatment", sizes=[1, 10], nsim=5)
    with pytest.raises(ValueError, match="along='nope' is not a column"):
        mb.power_curve(small, "treatment", along="nope", sizes=[10], nsim=5)
    with pytest.raises(ValueError, match="names no fixed-effect"):
        mb.power_curve(small, "nope", sizes=[10], nsim=5)


# --------------------------------------------------------------------------- t and F tests
@pytest.mark.parametrize(
    "method, ddf", [("satterthwaite", "satterthwaite"), ("kr", "kenward-roger")]
)
def test_ddf_pvalues_equal_those_of_a_fit(small, method, ddf):
    """Replicate j's p-value is coef_table(ddf)'s Pr(>|t|) of mb.fit on simulated response j
    (the fit started where power's refits start, the assumed theta)."""
    nsim = 4
    res = mb.power(small, "treatment", nsim=nsim, seed=9, method=method)
    assert res.method == method and res.n_valid == nsim
    Y = mb.simulate(small, nsim, seed=9)
    for j in range(nsim):
        fit = mb.fit(TWO_ARM, small.spec.data.assign(y=Y[:, j]), ddf=ddf, start=small.theta)
        np.testing.assert_allclose(
            res.pvalues[j], fit.coef_table()["Pr(>|t|)"]["treatment"], rtol=1e-6
        )
    title = {"satterthwaite": "Satterthwaite t test", "kr": "Kenward-Roger t test"}[method]
    assert f"{title} of coefficient 'treatment'" in res.summary()
    assert "refitted by REML" in res.summary()


def test_satterthwaite_term_pvalues_equal_anova(three_level):
    """A 3-level factor as a term: the F test of anova(ddf="satterthwaite") on each refit."""
    nsim = 3
    res = mb.power(three_level, "cond", nsim=nsim, seed=9, method="satterthwaite")
    Y = mb.simulate(three_level, nsim, seed=9)
    for j in range(nsim):
        fit = mb.fit(
            three_level.formula,
            three_level.spec.data.assign(y=Y[:, j]),
            ddf="satterthwaite",
            start=three_level.theta,
        )
        np.testing.assert_allclose(res.pvalues[j], fit.anova().loc["cond", "Pr(>F)"], rtol=1e-6)
    assert "Satterthwaite F test of term 'cond' (2 columns)" in res.summary()


def test_kr_term_pvalue_is_the_unscaled_f_test(three_level):
    """k columns with Kenward-Roger: F = b'(L Phi_A L')^-1 b / k on pbkrtest's df."""
    res = mb.power(three_level, "cond", nsim=1, seed=9, method="kr")
    y = mb.simulate(three_level, 1, seed=9)[:, 0]
    fit = mb.fit(
        three_level.formula,
        three_level.spec.data.assign(y=y),
        ddf="kenward-roger",
        start=three_level.theta,
    )
    kr = fit._kenward_roger
    L = np.eye(3)[[1, 2]]
    b = L @ fit.beta
    F = b @ np.linalg.solve(L @ kr.vcov_adj @ L.T, b) / 2
    np.testing.assert_allclose(res.pvalues[0], stats.f.sf(F, 2, kr.df_contrast(L)), rtol=1e-6)


def test_default_method_follows_ddf(small):
    assert small.ddf == "satterthwaite"
    assert mb.power(small, "treatment", nsim=3, seed=1).method == "satterthwaite"
    y = mb.simulate(small, 1, seed=1)[:, 0]
    data = small.spec.data.assign(y=y)
    for ddf, method in (
        ("wald", "wald"),
        ("kenward-roger", "kr"),
        ("satterthwaite", "satterthwaite"),
    ):
        fit = mb.fit(TWO_ARM, data, ddf=ddf)
        res = mb.power(fit, "treatment", nsim=3, seed=1)
        assert res.method == method
        np.testing.assert_array_equal(
            res.pvalues, mb.power(fit, "treatment", nsim=3, seed=1, method=method).pvalues
        )
    curve = mb.power_curve(
        mb.fit(TWO_ARM, data, ddf="wald"), "treatment", sizes=[10], nsim=3, seed=1
    )
    assert curve.results[0].method == "wald"


def test_kr_needs_a_reml_model(small):
    ml = mb.model(
        TWO_ARM, small.spec.data, beta=small.beta, sigma=small.sigma, theta=small.theta, REML=False
    )
    with pytest.raises(ValueError, match="method='kr' .*needs a REML model"):
        mb.power(ml, "treatment", nsim=5, method="kr")
    # An ML model's default (Satterthwaite) runs, refitted by ML.
    res = mb.power(ml, "treatment", nsim=5, seed=1)
    assert res.method == "satterthwaite" and "refitted by ML" in res.summary()


def test_satterthwaite_power_is_below_wald_power_with_few_groups():
    """6 subjects: z ignores the uncertainty of the variance estimates; t on ~4 df does not.

    Same simulated data sets, same estimate and standard error: the t test's p-value is
    larger in every replicate, so its rejections are a subset of Wald's."""
    six = two_arm(6, per_subject=5, effect=1.0)
    wald = mb.power(six, "treatment", nsim=200, seed=1, method="wald")
    sat = mb.power(six, "treatment", nsim=200, seed=1, method="satterthwaite")
    assert wald.n_valid == sat.n_valid == 200
    assert np.all(sat.pvalues >= wald.pvalues)
    assert sat.power < wald.power - 0.05


def test_satterthwaite_agrees_with_wald_on_a_large_design():
    """120 subjects: Satterthwaite's df are ~118, t and z nearly coincide."""
    model = two_arm(120, per_subject=4, effect=0.3)
    wald = mb.power(model, "treatment", nsim=150, seed=6, method="wald")
    sat = mb.power(model, "treatment", nsim=150, seed=6, method="satterthwaite")
    se = np.sqrt(wald.power * (1 - wald.power) / 150)
    assert abs(sat.power - wald.power) < 2 * se
    # Replicate by replicate the p-values differ by the t vs z tails on ~118 df only.
    assert np.all(sat.pvalues >= wald.pvalues)
    np.testing.assert_allclose(sat.pvalues, wald.pvalues, atol=0.005)
