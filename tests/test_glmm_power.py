"""Power, likelihood-ratio and parametric-bootstrap tests for GLMMs (mb.model with family=).

lme4's ``anova()`` numbers for cbpp come from scripts/glmm_lrt_reference.R
(tests/data/glmm_lrt_reference.json).
"""

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import special, stats

import mixboot as mb
from mixboot.compare import reduced_model
from mixboot.power import clopper_pearson, model_at_size

REFERENCE = json.loads((Path(__file__).parent / "data" / "glmm_lrt_reference.json").read_text())
CBPP_LARGE = "cbind(incidence, size - incidence) ~ period + (1 | herd)"
CBPP_SMALL = "cbind(incidence, size - incidence) ~ 1 + (1 | herd)"
CROSSED = "y ~ cond + (1 | subject) + (1 | item)"


@pytest.fixture(scope="module")
def cbpp():
    d = mb.datasets.load("cbpp")
    return (
        mb.fit(CBPP_LARGE, data=d, family="binomial"),
        mb.fit(CBPP_SMALL, data=d, family="binomial"),
    )


def crossed_bernoulli(subjects=30, items=20, effect=0.6):
    """Bernoulli responses, subjects x items, the two-level condition varying between items."""
    d = mb.design.crossed(subjects=subjects, items=items, item_between={"cond": ["a", "b"]})
    return mb.model(
        CROSSED,
        d,
        family="bernoulli",
        beta={"(Intercept)": 0.0, "condb": effect},
        re={"subject": 1.0, "item": 0.5},
    )


@pytest.fixture(scope="module")
def bernoulli():
    return crossed_bernoulli()


# --------------------------------------------------------------------------- mb.model
def test_model_from_parameters(bernoulli):
    g = bernoulli
    assert g.from_parameters and g.converged and g.family.name == "binomial"
    assert g.family.link.name == "logit" and g.nAGQ == 1
    np.testing.assert_array_equal(g.theta, [1.0, 0.5])
    assert g.varcorr["sdcor"].tolist() == [1.0, 0.5]
    ws = g.model.workspace
    np.testing.assert_allclose(g.eta, g.spec.X @ g.beta, rtol=0, atol=0)
    np.testing.assert_array_equal(g.vcov_matrix, ws.vcov_rx(g.theta, g.eta))
    Y = g.simulate(nsim=3, seed=1)
    assert Y.shape == (600, 3) and set(np.unique(Y)) <= {0.0, 1.0}
    # correlated random slopes on the link scale, a Poisson model, binomial trials
    d = mb.design.nested(groups=12, per_group=6, x={"x": np.arange(6.0)})
    p = mb.model(
        "y ~ x + (x | group)",
        d,
        family="poisson",
        beta=[1.0, 0.1],
        re={"group": {"sd": [0.5, 0.2], "corr": [[1, 0.3], [0.3, 1]]}},
    )
    np.testing.assert_allclose(p.varcorr["sdcor"], [0.5, 0.2, 0.3])
    b = mb.model(
        "y ~ x + (1 | group)", d, family="binomial", beta=[0.0, 0.2], theta=[0.7], trials=10
    )
    np.testing.assert_array_equal(b.spec.trials, np.full(72, 10.0))
    counts = b.simulate(nsim=2, seed=3) * 10
    np.testing.assert_array_equal(counts, np.round(counts))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(sigma=1.0), "sigma does not apply to a GLMM"),
        (dict(REML=False), "REML does not apply to a GLMM"),
        (dict(family="poisson", trials=5), "trials= applies to binomial GLMMs"),
        (dict(family="gamma"), "unknown family"),
    ],
)
def test_model_errors(kwargs, message):
    d = mb.design.nested(groups=5, per_group=4)
    args = dict(beta=[0.0], re={"group": 1.0}, family="bernoulli") | kwargs
    with pytest.raises(ValueError, match=message):
        mb.model("y ~ 1 + (1 | group)", d, **args)
    with pytest.raises(ValueError, match="trials= applies to GLMMs"):
        mb.model("y ~ 1 + (1 | group)", d, beta=[0.0], sigma=1.0, re={"group": 1.0}, trials=2)


# --------------------------------------------------------------------------- lrt
@pytest.mark.parametrize("case", REFERENCE["comparisons"], ids=lambda c: c["id"])
def test_lrt_matches_lme4_anova(case):
    d = mb.datasets.load("cbpp")
    small = mb.fit(case["small"], data=d, family="binomial")
    large = mb.fit(case["large"], data=d, family="binomial")
    out = mb.lrt(large, small)
    tab = out.table
    assert out.refitted == ()
    assert tab["npar"].tolist() == case["npar"]
    assert int(tab["Df"].iloc[1]) == case["Df"]
    for col in ("deviance", "AIC", "BIC", "logLik"):
        np.testing.assert_allclose(tab[col].to_numpy(), case[col], rtol=0, atol=1e-6)
    np.testing.assert_allclose(tab["Chisq"].iloc[1], case["Chisq"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(tab["Pr(>Chisq)"].iloc[1], case["p"], rtol=1e-6)
    # the statistic is the difference of the fits' -2 log-likelihoods
    assert tab["Chisq"].iloc[1] == small.objective - large.objective


def test_lrt_refuses_models_of_different_kinds(cbpp):
    large, _ = cbpp
    d = mb.datasets.load("cbpp").assign(p=lambda x: x.incidence / x.size)
    lmm = mb.fit("p ~ 1 + (1 | herd)", data=d, REML=False)
    with pytest.raises(ValueError, match="different kinds"):
        mb.lrt(large, lmm)
    probit = mb.fit(CBPP_SMALL, data=mb.datasets.load("cbpp"), family="binomial", link="probit")
    with pytest.raises(ValueError, match=r"binomial\(probit\) GLMM"):
        mb.lrt(large, probit)


def test_reduced_model_of_a_glmm(cbpp):
    large, small = cbpp
    model, k = reduced_model(large, "period")
    assert k == 3 and model.family is large.family and model.nAGQ == 1
    np.testing.assert_allclose(model.fit().objective, small.objective, rtol=0, atol=1e-7)


# --------------------------------------------------------------------------- pb_lrt
def test_pb_lrt_on_cbpp(cbpp):
    large, small = cbpp
    test = mb.pb_lrt(large, small, B=40, seed=5)
    assert test.lrt == small.objective - large.objective and test.df == 3
    assert test.n_valid + test.n_failed == 40
    assert 0 < test.p_boot <= 1
    valid = test.lrt_boot[np.isfinite(test.lrt_boot)]
    assert test.p_boot == (1 + np.sum(valid >= test.lrt - 1e-6)) / (1 + valid.size)
    # LRT* under the small model is small next to the observed 25.6: p_boot at its floor
    assert test.p_boot == 1 / (1 + test.n_valid)
    # the same replicates, to the bit, whatever B and the chunking (chunks of 32: 20
    # alone, or 32 + 8)
    fewer = mb.pb_lrt(large, small, B=20, seed=5)
    np.testing.assert_array_equal(fewer.lrt_boot, test.lrt_boot[:20])
    again = mb.pb_lrt(large, small, B=40, seed=5, n_jobs=2)
    np.testing.assert_array_equal(again.lrt_boot, test.lrt_boot)


def test_pb_lrt_replicate_is_a_refit_pair(cbpp):
    large, small = cbpp
    test = mb.pb_lrt(large, small, B=2, seed=9)
    Y = small.simulate(nsim=2, seed=9)
    a = small.model.refit(Y.T, start=np.concatenate([small.theta, small.beta]))
    b = large.model.refit(Y.T, start=np.concatenate([large.theta, large.beta]))
    np.testing.assert_array_equal(test.lrt_boot, a.objective - b.objective)


# --------------------------------------------------------------------------- power
def test_wald_power_fields_and_pvalues(bernoulli):
    res = mb.power(bernoulli, "condb", nsim=40, seed=3)
    assert res.method == "wald" and res.family == "binomial(logit)" and np.isnan(res.sigma)
    assert res.n_valid + res.n_failed + res.n_nonconverged == 40
    assert 0 <= res.lower <= res.power <= res.upper <= 1
    assert (res.lower, res.upper) == clopper_pearson(res.n_significant, res.n_valid)
    assert res.power == np.mean(res.pvalues[np.isfinite(res.pvalues)] < 0.05)
    assert "binomial(logit); refitted by ML" in res.summary()
    # replicate i: simulate column i, refit, z = beta / se with (R_X'R_X)^-1 at the refit
    Y = bernoulli.simulate(nsim=3, seed=3)
    r = bernoulli.model.refit(Y.T, start=np.concatenate([bernoulli.theta, bernoulli.beta]))
    ws = bernoulli.model.workspace
    eta = ws.eta(r.u, r.theta, r.beta)
    for i in range(3):
        V = ws.vcov_rx(r.theta[i], eta[i])
        z = r.beta[i, 1] / np.sqrt(V[1, 1])
        np.testing.assert_allclose(res.pvalues[i], 2 * stats.norm.sf(abs(z)), rtol=1e-12)


def test_power_same_bits_for_any_split(tmp_path):
    bernoulli = crossed_bernoulli(subjects=12, items=10)
    full = mb.power(bernoulli, "condb", nsim=40, seed=4)
    part = mb.power(bernoulli, "condb", nsim=12, seed=4)
    np.testing.assert_array_equal(part.pvalues, full.pvalues[:12])
    mb.power(bernoulli, "condb", nsim=12, seed=4, checkpoint=tmp_path / "ck")
    resumed = mb.power(bernoulli, "condb", nsim=40, seed=4, checkpoint=tmp_path / "ck")
    np.testing.assert_array_equal(resumed.pvalues, full.pvalues)
    jobs = mb.power(bernoulli, "condb", nsim=40, seed=4, n_jobs=2)
    np.testing.assert_array_equal(jobs.pvalues, full.pvalues)


def test_lrt_power_pvalues_are_refit_pairs(bernoulli):
    res = mb.power(bernoulli, "condb", nsim=6, seed=6, method="lrt")
    Y = bernoulli.simulate(nsim=2, seed=6)
    full = bernoulli.model.refit(Y.T, start=np.concatenate([bernoulli.theta, bernoulli.beta]))
    small, _ = reduced_model(bernoulli, "condb")
    red = small.refit(Y.T, start=np.concatenate([bernoulli.theta, bernoulli.beta[:1]]))
    stat = np.maximum(red.objective - full.objective, 0)
    np.testing.assert_allclose(res.pvalues[:2], special.chdtrc(1, stat), rtol=1e-12)


def test_power_from_a_fit_joint_term_and_pb(cbpp):
    large, _ = cbpp
    wald = mb.power(large, "period", nsim=30, seed=1)
    lrt = mb.power(large, "period", nsim=30, seed=1, method="lrt")
    assert wald.df == lrt.df == 3 and wald.method == "wald"
    # cbpp's period effect is strong (LRT 25.6 on 3 df): nearly every replicate rejects
    assert wald.power > 0.8 and lrt.power > 0.8
    pb = mb.power(large, "period", nsim=3, seed=1, method="pb", pb_B=9)
    assert pb.n_valid == 3 and np.all(pb.pvalues[np.isfinite(pb.pvalues)] >= 0.1)


def test_power_under_the_null_holds_its_level():
    """nsim = 200 under beta = 0: the Wald level within a 99.9% binomial band of 0.05."""
    res = mb.power(crossed_bernoulli(subjects=20, items=10, effect=0.0), "condb", nsim=200, seed=7)
    lo, hi = stats.binom.ppf([0.0005, 0.9995], res.n_valid, 0.05) / res.n_valid
    assert lo <= res.power <= hi


@pytest.mark.parametrize("method", ["satterthwaite", "kr"])
def test_ddf_methods_are_for_lmms(bernoulli, method):
    with pytest.raises(ValueError, match=f"method='{method}'.*linear mixed models"):
        mb.power(bernoulli, "condb", nsim=5, method=method)


def test_power_curve_along_subjects():
    g = crossed_bernoulli(subjects=10, items=10)
    curve = mb.power_curve(g, "condb", along="subject", sizes=[10, 20], nsim=16, seed=2)
    assert list(curve["size"]) == [10, 20]
    bigger = model_at_size(g, "subject", 20)
    assert bigger.ngroups == {"subject": 20, "item": 10} and bigger.from_parameters
    np.testing.assert_array_equal(bigger.theta, g.theta)
    np.testing.assert_array_equal(
        curve.results[1].pvalues, mb.power(bigger, "condb", nsim=16, seed=2).pvalues
    )
    trials = mb.model(
        "y ~ x + (1 | group)",
        mb.design.nested(groups=6, per_group=3, x={"x": [0.0, 1.0, 2.0]}),
        family="binomial",
        beta=[0.0, 0.5],
        re={"group": 0.5},
        trials=[4, 5, 6] * 6,
    )
    np.testing.assert_array_equal(model_at_size(trials, "group", 8).spec.trials, [4, 5, 6] * 8)
