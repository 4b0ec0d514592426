import numpy as np
import pandas as pd
import pytest

import mixboot as mb


@pytest.fixture(scope="module")
def fit():
    return mb.fit("Reaction ~ Days + (Days | Subject)", mb.datasets.load("reaction"), REML=False)


def test_shape_and_seed(fit):
    a = mb.simulate(fit, nsim=4, seed=1)
    assert a.shape == (180, 4)
    assert np.array_equal(a, fit.simulate(4, seed=1))
    assert np.array_equal(a[:, :2], mb.simulate(fit, 2, seed=1))  # column j: its own stream
    assert not np.array_equal(a, mb.simulate(fit, 4, seed=2))
    g = np.random.default_rng(0)
    assert mb.simulate(fit, 1, seed=g).shape == (180, 1)


def test_moments_match_model(fit):
    """Mean X beta; covariance sigma^2 (Z Lambda Lambda' Z' + I) at a few entries."""
    Y = mb.simulate(fit, 20000, seed=3)
    mean = fit.spec.X @ fit.beta
    se_mean = np.sqrt(np.var(Y, axis=1) / Y.shape[1])
    assert np.all(np.abs(Y.mean(axis=1) - mean) < 5 * se_mean)
    Z = fit.spec.z_matrix().toarray()
    T = fit.spec.terms[0].factor(fit.theta)
    Lam = np.kron(np.eye(fit.spec.terms[0].nlevels), T)
    V = fit.scale * (Z @ Lam @ Lam.T @ Z.T + np.eye(180))
    C = np.cov(Y[[0, 9, 10]])
    np.testing.assert_allclose(C, V[np.ix_([0, 9, 10], [0, 9, 10])], rtol=0.06, atol=15)


def test_other_parameters(fit):
    Y = mb.simulate(
        fit, 5000, seed=4, beta={"(Intercept)": 0.0, "Days": 0.0}, theta=[0.0, 0.0, 0.0], sigma=2.0
    )
    assert abs(Y.mean()) < 0.01
    assert abs(Y.std() - 2.0) < 0.01


def test_use_u_conditions_on_fitted_effects(fit):
    Y = mb.simulate(fit, 4000, seed=5, use_u=True)
    np.testing.assert_allclose(Y.mean(axis=1), fit.fittedvalues, atol=5 * fit.sigma / np.sqrt(4000))


def test_newdata_with_new_levels(fit):
    new = pd.DataFrame(
        {"Days": [0, 1, 2, 0], "Subject": ["S01", "S01", "S01", "NEW"], "Reaction": 0.0}
    )
    Y = mb.simulate(fit, 3000, seed=6, newdata=new)
    assert Y.shape == (4, 3000)
    sd_new = Y[3].std()
    T = fit.spec.terms[0].factor(fit.theta)
    expected = fit.sigma * np.sqrt((T @ T.T)[0, 0] + 1)
    assert abs(sd_new - expected) < 0.1 * expected
    Yu = mb.simulate(fit, 3000, seed=6, newdata=new, use_u=True)
    b = fit.ranef["Subject"].loc["S01"]
    np.testing.assert_allclose(
        Yu[0].mean(), fit.beta[0] + b.iloc[0], atol=5 * fit.sigma / np.sqrt(3000)
    )


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"nsim": 0}, "nsim"),
        ({"sigma": 0}, "sigma"),
        ({"beta": [1.0]}, "beta"),
        ({"seed": "x"}, "seed"),
    ],
)
def test_bad_arguments(fit, kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        mb.simulate(fit, **{"nsim": 1, **kwargs})
