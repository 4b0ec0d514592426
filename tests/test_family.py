"""GLM families and links (mixboot.family) against R's stats conventions."""

import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from mixboot.family import EPS, Family, binomial, get_family, poisson, prepare_response

ALL_LINKS = [
    ("binomial", "logit"),
    ("binomial", "probit"),
    ("binomial", "cloglog"),
    ("poisson", "log"),
    ("poisson", "identity"),
    ("poisson", "sqrt"),
]


def _mus(family):
    return (
        np.array([0.01, 0.2, 0.5, 0.77, 0.99])
        if family == "binomial"
        else np.array([0.1, 1.0, 3.5, 20.0])
    )


@pytest.mark.parametrize("family,link", ALL_LINKS)
def test_round_trip(family, link):
    lk = get_family(family, link).link
    assert lk.name == link
    mu = _mus(family)
    np.testing.assert_allclose(lk.linkinv(lk.linkfun(mu)), mu, rtol=1e-12)


@pytest.mark.parametrize("family,link", ALL_LINKS)
def test_mu_eta_is_derivative(family, link):
    lk = get_family(family, link).link
    eta = lk.linkfun(_mus(family))
    h = 1e-6
    fd = (lk.linkinv(eta + h) - lk.linkinv(eta - h)) / (2 * h)
    np.testing.assert_allclose(lk.mu_eta(eta), fd, rtol=1e-6, atol=1e-10)


def test_clamps_at_40():
    eta = np.array([-40.0, 40.0])
    logit = binomial().link
    np.testing.assert_array_equal(logit.linkinv(eta), [EPS / (1 + EPS), 1 / (1 + EPS)])
    assert logit.linkinv(eta)[1] == 1 - EPS
    np.testing.assert_array_equal(logit.mu_eta(eta), [EPS, EPS])
    probit = binomial("probit").link
    # R: binomial("probit")$linkinv(c(-40, 40)) = 2.2204460492503284e-16, 9.9999999999999978e-01
    np.testing.assert_allclose(
        probit.linkinv(eta), [2.2204460492503284e-16, 1 - 2.2204460492503284e-16], rtol=1e-12
    )  # scipy vs R qnorm/pnorm: ~2e-14
    np.testing.assert_array_equal(probit.mu_eta(eta), [EPS, EPS])
    cloglog = binomial("cloglog").link
    np.testing.assert_array_equal(cloglog.linkinv(eta), [EPS, 1 - EPS])
    np.testing.assert_array_equal(cloglog.mu_eta(np.array([-40.0, 40.0, 800.0])), [EPS, EPS, EPS])
    log = poisson().link
    np.testing.assert_array_equal(log.linkinv(eta), [EPS, np.exp(40.0)])
    np.testing.assert_array_equal(log.mu_eta(eta), [EPS, np.exp(40.0)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for lk in (logit, probit, cloglog):
            assert np.all(np.isfinite(lk.linkinv(np.array([-1e5, 1e5]))))
            assert np.all(np.isfinite(lk.mu_eta(np.array([-1e5, 1e5]))))
        assert log.linkinv(np.array([1e5]))[0] == np.inf  # R: exp(1e5) is Inf, no warning


def _direct_binomial_dev(y, mu, wt):
    out = []
    for yi, mi, wi in zip(y, mu, wt):
        a = yi * np.log(yi / mi) if yi > 0 else 0.0
        b = (1 - yi) * np.log((1 - yi) / (1 - mi)) if yi < 1 else 0.0
        out.append(2 * wi * (a + b))
    return np.array(out)


def test_dev_resids_binomial():
    y, mu, w = np.array([0, 1, 0.25, 0.6]), np.array([0.2, 0.7, 0.3, 0.5]), np.array([1, 1, 4, 5.0])
    d = binomial().dev_resids(y, mu, w)
    np.testing.assert_allclose(d, _direct_binomial_dev(y, mu, w), rtol=1e-14)
    # R: binomial()$dev.resids(c(0,1,.25,.6), c(.2,.7,.3,.5), c(1,1,4,5))
    np.testing.assert_allclose(
        d,
        [0.446287102628419530, 0.713349887877464783, 0.049314115333799313, 0.201355135506888633],
        rtol=1e-13,
    )


def test_dev_resids_poisson():
    y, mu, w = np.array([0, 3, 1, 7.0]), np.array([0.5, 2.5, 1.2, 6]), np.array([1, 2, 1, 1.0])
    d = poisson().dev_resids(y, mu, w)
    direct = [
        2 * wi * ((yi * np.log(yi / mi) if yi > 0 else 0.0) - (yi - mi))
        for yi, mi, wi in zip(y, mu, w)
    ]
    np.testing.assert_allclose(d, direct, rtol=1e-14)
    assert d[0] == 2 * 0.5
    # R: poisson()$dev.resids(c(0,3,1,7), c(.5,2.5,1.2,6), c(1,2,1,1))
    np.testing.assert_allclose(
        d, [1.0, 0.187858681527455218, 0.035356886412090727, 0.158109517581617176], rtol=1e-13
    )


def test_aic_binomial():
    y, mu, w = np.array([0, 1, 0.25, 0.6]), np.array([0.2, 0.7, 0.3, 0.5]), np.array([1, 1, 4, 5.0])
    a = binomial().aic(y, mu, w, w)
    assert a == pytest.approx(-2 * stats.binom.logpmf(np.round(y * w), w, mu).sum(), rel=1e-13)
    # R: binomial()$aic(c(0,1,.25,.6), c(1,1,4,5), c(.2,.7,.3,.5), c(1,1,4,5), 0)
    assert a == pytest.approx(5.2613451601617314, rel=1e-13)
    # 0/1 response: m = wt (no trial count above 1).
    # R: binomial()$aic(c(0,1,1,0), rep(1,4), c(.2,.7,.3,.5), rep(1,4), 0)
    assert binomial().aic(np.array([0, 1, 1, 0.0]), mu, np.ones(4), np.ones(4)) == pytest.approx(
        4.9538769602776469, rel=1e-13
    )


def test_aic_binomial_zero_weight_row_is_dropped():
    fam = binomial()
    full = fam.aic(
        np.array([0.5, 1.0]), np.array([0.4, 0.3]), np.array([2.0, 0.0]), np.array([2.0, 0.0])
    )
    assert full == pytest.approx(-2 * stats.binom.logpmf(1, 2, 0.4))


def test_aic_poisson():
    y, mu, w = np.array([0, 3, 1, 7.0]), np.array([0.5, 2.5, 1.2, 6]), np.array([1, 2, 1, 1.0])
    a = poisson().aic(y, mu, w, np.ones(4))
    assert a == pytest.approx(-2 * (stats.poisson.logpmf(y, mu) * w).sum(), rel=1e-13)
    # R: poisson()$aic(c(0,3,1,7), 1, c(.5,2.5,1.2,6), c(1,2,1,1), 0)
    assert a == pytest.approx(13.172596133772508, rel=1e-13)


def test_simulate_binomial():
    fam = binomial()
    mu, n = np.full(20000, 0.3), np.full(20000, 10.0)
    y = fam.simulate(np.random.default_rng(1), mu, n)
    assert np.all(y * n == np.round(y * n)) and y.min() >= 0 and y.max() <= 1
    assert y.mean() == pytest.approx(0.3, abs=0.005)
    assert y.var() == pytest.approx(0.3 * 0.7 / 10, rel=0.05)
    np.testing.assert_array_equal(y, fam.simulate(np.random.default_rng(1), mu, n))
    assert not np.array_equal(y, fam.simulate(np.random.default_rng(2), mu, n))
    with pytest.raises(ValueError, match="trials"):
        fam.simulate(np.random.default_rng(1), mu[:2], np.array([1.5, 2.0]))


def test_simulate_poisson():
    fam = poisson()
    mu = np.full(20000, 4.0)
    y = fam.simulate(np.random.default_rng(3), mu, np.ones(20000))
    assert y.dtype == float
    assert y.mean() == pytest.approx(4.0, rel=0.02)
    assert y.var() == pytest.approx(4.0, rel=0.05)
    np.testing.assert_array_equal(y, fam.simulate(np.random.default_rng(3), mu, np.ones(20000)))


def test_variance_and_validity():
    assert np.allclose(binomial().variance(np.array([0.5, 0.1])), [0.25, 0.09])
    assert np.allclose(poisson().variance(np.array([2.0])), [2.0])
    assert binomial().valid_mu(np.array([0.1, 0.9])) and not binomial().valid_mu(
        np.array([0.0, 0.5])
    )
    assert not binomial().valid_mu(np.array([1.0])) and not binomial().valid_mu(np.array([np.nan]))
    assert poisson().valid_mu(np.array([1e-3, 50])) and not poisson().valid_mu(np.array([0.0]))
    assert poisson().valid_eta(np.array([-5.0])) and binomial().valid_eta(np.array([100.0]))
    assert not poisson("sqrt").valid_eta(np.array([-1.0, 2.0]))
    assert np.allclose(
        binomial().mustart(np.array([0.0, 1.0]), np.array([1.0, 3.0])), [0.25, 0.875]
    )
    assert np.allclose(poisson().mustart(np.array([0.0, 2.0]), np.ones(2)), [0.1, 2.1])


# ---------------------------------------------------------------- prepare_response


def test_cbind_counts():
    y, w, n = prepare_response(
        binomial(), np.array([3, 0, 5]), failures=np.array([1, 4, 0]), name="s"
    )
    np.testing.assert_array_equal(y, [0.75, 0, 1])
    np.testing.assert_array_equal(w, [4, 4, 5])
    np.testing.assert_array_equal(n, [4, 4, 5])
    assert y.dtype == w.dtype == n.dtype == float


@pytest.mark.parametrize(
    "s,f,which",
    [
        ([3, -1], [1, 2], "successes"),
        ([3, 1], [1, -2], "failures"),
        ([2.5, 1], [1, 2], "successes"),
        ([3, 1], [1, np.nan], "failures"),
    ],
)
def test_cbind_bad_counts(s, f, which):
    with pytest.raises(ValueError, match=which):
        prepare_response(binomial(), np.array(s, float), failures=np.array(f, float), name="s")


def test_cbind_zero_trials():
    with pytest.raises(ValueError, match=r"s: rows 1, 3 have zero trials"):
        prepare_response(
            binomial(), np.array([1, 0, 2, 0]), failures=np.array([1, 0, 0, 0]), name="s"
        )


def test_proportions_with_weights():
    y, w, n = prepare_response(binomial(), np.array([0.5, 0.25, 1.0]), weights=np.array([2, 4, 3]))
    np.testing.assert_array_equal(y, [0.5, 0.25, 1.0])
    np.testing.assert_array_equal(w, [2, 4, 3])
    np.testing.assert_array_equal(n, [2, 4, 3])
    with pytest.warns(UserWarning, match="non-integer #successes"):
        prepare_response(binomial(), np.array([0.5, 0.3]), weights=np.array([2, 4]))
    with pytest.raises(ValueError, match="0 <= y <= 1"):
        prepare_response(binomial(), np.array([2.0, 0.5]), weights=np.array([4, 4]), name="resp")
    with pytest.raises(ValueError, match="weights"):
        prepare_response(binomial(), np.array([0.5, 0.5]), weights=np.array([2, 0]))


def test_bool_and_numeric_binary():
    y, w, n = prepare_response(binomial(), np.array([True, False, True]))
    np.testing.assert_array_equal(y, [1, 0, 1])
    np.testing.assert_array_equal(w, [1, 1, 1])
    np.testing.assert_array_equal(n, [1, 1, 1])
    y, _, _ = prepare_response(binomial(), pd.Series([1, 0, 0]), bernoulli=True)
    np.testing.assert_array_equal(y, [1, 0, 0])


def test_two_level_strings_sorted():
    y, _, _ = prepare_response(binomial(), pd.Series(["yes", "no", "yes"]))
    np.testing.assert_array_equal(y, [1, 0, 1])  # "no" sorts first: failure
    y, _, _ = prepare_response(binomial(), np.array(["b", "a", "a"]))
    np.testing.assert_array_equal(y, [1, 0, 0])


def test_categorical_uses_category_order():
    cat = pd.Categorical(["yes", "no", "yes"], categories=["yes", "no"])
    y, _, _ = prepare_response(binomial(), pd.Series(cat))
    np.testing.assert_array_equal(y, [0, 1, 0])  # "yes" is the first category: failure
    # unused categories are dropped first, as lme4's model frame does
    cat = pd.Categorical(["b", "c", "b"], categories=["a", "b", "c"])
    y, _, _ = prepare_response(binomial(), pd.Series(cat))
    np.testing.assert_array_equal(y, [0, 1, 0])


def test_three_levels_error():
    with pytest.raises(ValueError, match=r"outcome:.*exactly two levels.*3: a, b, c"):
        prepare_response(binomial(), pd.Series(["a", "b", "c"]), name="outcome")


def test_missing_response_error():
    with pytest.raises(ValueError, match="resp: missing"):
        prepare_response(binomial(), np.array([0.0, np.nan]), name="resp")
    with pytest.raises(ValueError, match="resp: missing"):
        prepare_response(binomial(), pd.Series(["a", None, "b"]), name="resp")
    with pytest.raises(ValueError, match="resp: missing"):
        prepare_response(poisson(), np.array([1.0, np.nan]), name="resp")


def test_bernoulli_needs_zero_one():
    fam = get_family("bernoulli")
    assert fam == binomial() and fam.bernoulli
    with pytest.raises(ValueError, match="resp.*bernoulli"):
        prepare_response(fam, np.array([0.0, 0.5, 1.0]), name="resp")
    with pytest.raises(ValueError, match="bernoulli"):
        prepare_response(binomial(), np.array([0.0, 0.5]), bernoulli=True)


def test_binomial_proportions_without_weights_warn():
    with pytest.warns(UserWarning, match="non-integer #successes"):
        y, w, _ = prepare_response(binomial(), np.array([0.0, 0.5, 1.0]))
    np.testing.assert_array_equal(w, [1, 1, 1])


def test_poisson_response():
    y, w, n = prepare_response(poisson(), np.array([0, 2, 5]))
    np.testing.assert_array_equal(y, [0, 2, 5])
    np.testing.assert_array_equal(w, [1, 1, 1])
    np.testing.assert_array_equal(n, [1, 1, 1])
    _, w, _ = prepare_response(poisson(), np.array([0, 2]), weights=np.array([2.0, 0.5]))
    np.testing.assert_array_equal(w, [2, 0.5])
    with pytest.raises(ValueError, match="cnt: negative"):
        prepare_response(poisson(), np.array([1, -1]), name="cnt")
    with pytest.warns(UserWarning, match="cnt: non-integer"):
        prepare_response(poisson(), np.array([1.5, 2]), name="cnt")
    with pytest.raises(TypeError, match="cnt"):
        prepare_response(poisson(), np.array(["a", "b"]), name="cnt")


def test_get_family():
    assert get_family("binomial").link.name == "logit"
    assert get_family("poisson").link.name == "log"
    assert get_family("binomial", "probit") == binomial("probit")
    fam = poisson()
    assert get_family(fam) is fam
    assert get_family(fam, "sqrt").link.name == "sqrt"
    assert isinstance(get_family("Binomial"), Family)
    with pytest.raises(ValueError, match=r"family: unknown family 'gamma'.*binomial.*poisson"):
        get_family("gamma")
    with pytest.raises(
        ValueError,
        match=r"link: 'log' is not supported for the binomial family; "
        r"supported: logit, probit, cloglog",
    ):
        get_family("binomial", "log")
    with pytest.raises(ValueError, match=r"link: 'logit'.*poisson.*log, identity, sqrt"):
        poisson("logit")
