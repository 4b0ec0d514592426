"""mb.model: models from chosen parameters (seed 004), their simulations and their checks."""

import numpy as np
import pandas as pd
import pytest

import mixboot as mb

FORMULA = "y ~ 1 + x + (1 + x | group)"
BETA = {"(Intercept)": 6.0, "x": 4.0}
RE = {"group": {"sd": [3.0, 2.0], "corr": [[1.0, 0.7], [0.7, 1.0]]}}


def seed004(groups=3):
    """Seed 004's design: ``groups`` groups of x = 1..10."""
    return mb.design.nested(groups=groups, per_group=10, x={"x": range(1, 11)})


@pytest.fixture(scope="module")
def m3():
    return mb.model(FORMULA, seed004(), beta=BETA, sigma=1.0, re=RE)


def _vc(result):
    """varcorr as {(grp, var1, var2): (vcov, sdcor)} with None for a missing var2."""
    out = {}
    for row in result.varcorr.itertuples(index=False):
        var2 = (
            None
            if row.var2 is None or (isinstance(row.var2, float) and np.isnan(row.var2))
            else row.var2
        )
        out[(row.grp, row.var1, var2)] = (row.vcov, row.sdcor)
    return out


def test_seed004_varcorr(m3):
    vc = _vc(m3)
    np.testing.assert_allclose(vc[("group", "(Intercept)", None)], (9.0, 3.0))
    np.testing.assert_allclose(vc[("group", "x", None)], (4.0, 2.0))
    np.testing.assert_allclose(vc[("group", "(Intercept)", "x")], (0.7 * 3 * 2, 0.7))
    assert m3.from_parameters and m3.converged
    assert list(m3.fe_params) == [6.0, 4.0] and m3.sigma == 1.0
    np.testing.assert_allclose(m3.spec.X @ m3.beta, np.tile(6 + 4 * np.arange(1, 11), 3))


def _marginal_cov(result) -> np.ndarray:
    """V = Z Sigma_b Z' + sigma^2 I, with Sigma_b = sigma^2 Lambda Lambda' built densely."""
    spec = result.spec
    Z = spec.z_matrix().toarray()
    blocks = [
        np.kron(np.eye(t.nlevels), t.factor(result.theta[s]))
        for t, s in zip(spec.terms, spec.theta_slices)
    ]
    k = sum(b.shape[0] for b in blocks)
    Lam = np.zeros((k, k))
    off = 0
    for b in blocks:
        Lam[off : off + b.shape[0], off : off + b.shape[0]] = b
        off += b.shape[0]
    return result.scale * (Z @ Lam @ Lam.T @ Z.T + np.eye(spec.n))


def test_simulated_mean_and_covariance(m3):
    N = 20000
    Y = mb.simulate(m3, N, seed=4)
    V = _marginal_cov(m3)
    # Z Sigma_b Z' by hand from seed 004's Sigma (rows of one group share b).
    x = np.arange(1, 11.0)
    Sigma = np.array([[9.0, 4.2], [4.2, 4.0]])
    Zg = np.column_stack([np.ones(10), x])
    np.testing.assert_allclose(V[:10, :10], Zg @ Sigma @ Zg.T + np.eye(10))
    assert np.all(V[:10, 10:] == 0)
    # Mean: each row's average is within 5 standard errors sqrt(V_ii / N) of X beta.
    mean = m3.spec.X @ m3.beta
    assert np.all(np.abs(Y.mean(axis=1) - mean) < 5 * np.sqrt(np.diag(V) / N))
    # Covariance: for Gaussian data the sample covariance s_ij has variance
    # (V_ij^2 + V_ii V_jj) / N; every entry must be within 5 of those SEs.
    C = np.cov(Y)
    se = np.sqrt((V**2 + np.outer(np.diag(V), np.diag(V))) / N)
    assert np.all(np.abs(C - V) < 5 * se)


def test_fits_recover_the_parameters():
    """Refits of data simulated from the model average to the truth.

    Three groups cannot pin down a 2x2 covariance, so this uses 40 groups of seed
    004's x = 1..10 (400 observations) and 300 simulated data sets, refitted by
    REML through bootMer.
    """
    m = mb.model(FORMULA, seed004(40), beta=BETA, sigma=1.0, re=RE)
    boot = mb.bootMer(m, B=300, seed=7)
    assert boot.n_failed == 0
    tbl = boot.tbl
    # Fixed effects are unbiased: their means lie within 4 Monte Carlo SEs (sd / sqrt(B)).
    for name, truth in BETA.items():
        est = tbl[name].to_numpy()
        assert abs(est.mean() - truth) < 4 * est.std() / np.sqrt(len(est))
    # sigma: 400 observations put one estimate within about 0.04 of 1; the median of
    # 300 is within a few thousandths, so 0.02 leaves room for REML's small bias.
    assert abs(np.median(tbl["sigma"]) - 1.0) < 0.02
    # SDs and the correlation: with 40 groups one estimate of an SD has an SE near
    # sd / sqrt(2 * 40) (0.34 for 3) and is biased down by a few percent (the SD is a
    # concave function of the variance); the mean of 300 has an MC SE near 0.02, so
    # 10% of the truth is a safe yet meaningful bound.  The correlation's SE is
    # near (1 - rho^2) / sqrt(40) = 0.08 per estimate, its MC SE 0.005: 0.05 absolute.
    assert abs(tbl["sd_group_(Intercept)"].mean() - 3.0) < 0.3
    assert abs(tbl["sd_group_x"].mean() - 2.0) < 0.2
    assert abs(tbl["cor_group_(Intercept)_x"].mean() - 0.7) < 0.05


def test_theta_alternative(m3):
    again = mb.model(FORMULA, seed004(), beta=[6, 4], sigma=1.0, theta=m3.theta)
    pd.testing.assert_frame_equal(again.varcorr, m3.varcorr)
    # lme4's theta: Sigma / sigma^2 = T T' with T = [[3, 0], [1.4, sqrt(4 - 1.96)]].
    np.testing.assert_allclose(m3.theta, [3.0, 1.4, np.sqrt(4 - 1.4**2)])


def test_double_bar_terms():
    d = seed004(10)
    m = mb.model("y ~ 1 + x + (1 + x || group)", d, beta=BETA, sigma=0.5, re={"group": [3.0, 2.0]})
    vc = _vc(m)
    np.testing.assert_allclose(vc[("group", "(Intercept)", None)], (9.0, 3.0))
    np.testing.assert_allclose(vc[("group.1", "x", None)], (4.0, 2.0))
    assert len(m.varcorr) == 3  # no correlation row
    with pytest.raises(ValueError, match="cannot be correlated"):
        mb.model("y ~ 1 + x + (1 + x || group)", d, beta=BETA, sigma=0.5, re=RE)


def test_crossed_random_intercepts():
    d = mb.design.crossed(subjects=8, items=6, replicates=2)
    m = mb.model(
        "y ~ 1 + (1 | subject) + (1 | item)",
        d,
        beta=[2.0],
        sigma=0.7,
        re={"subject": 1.0, "item": 0.5},
    )
    vc = _vc(m)
    np.testing.assert_allclose(vc[("subject", "(Intercept)", None)], (1.0, 1.0))
    np.testing.assert_allclose(vc[("item", "(Intercept)", None)], (0.25, 0.5))
    V = _marginal_cov(m)
    s, i = d["subject"].to_numpy(), d["item"].to_numpy()
    expected = (
        1.0 * (s[:, None] == s[None, :]) + 0.25 * (i[:, None] == i[None, :]) + 0.49 * np.eye(len(d))
    )
    np.testing.assert_allclose(V, expected, atol=1e-12)
    N = 20000
    C = np.cov(mb.simulate(m, N, seed=5))
    se = np.sqrt((V**2 + np.outer(np.diag(V), np.diag(V))) / N)
    assert np.all(np.abs(C - V) < 5 * se)


def test_response_column_may_be_present_or_absent():
    d = seed004()
    with_y = d.assign(y=np.arange(len(d), dtype=float))
    a = mb.model(FORMULA, d, beta=BETA, sigma=1.0, re=RE)
    b = mb.model(FORMULA, with_y, beta=BETA, sigma=1.0, re=RE)
    np.testing.assert_array_equal(mb.simulate(a, 3, seed=1), mb.simulate(b, 3, seed=1))


def _three_effects(re, **kw):
    d = mb.design.nested(groups=12, per_group=8, x={"x": np.arange(8.0), "z": np.arange(8.0) ** 2})
    return mb.model("y ~ x + z + (1 + x + z | group)", d, beta=[0, 1, 0.1], sigma=1.0, re=re, **kw)


@pytest.mark.parametrize(
    "re, message",
    [
        ({"group": {"sd": [-1.0, 2.0]}}, r"re\['group'\]\['sd'\] must be finite and >= 0"),
        (
            {"group": {"sd": [1.0, 2.0], "corr": [[1, 0.5], [0.4, 1]]}},
            r"re\['group'\]\['corr'\] must be symmetric",
        ),
        (
            {"group": {"sd": [1.0, 2.0], "corr": [[2, 0.5], [0.5, 1]]}},
            r"re\['group'\]\['corr'\] must have a unit diagonal",
        ),
        (
            {"group": {"sd": [1.0, 2.0], "corr": [[1, 1.2], [1.2, 1]]}},
            r"re\['group'\]\['corr'\] must be positive semidefinite",
        ),
        ({"group": {"sd": [1.0, 2.0, 3.0]}}, r"re\['group'\]\['sd'\] must have 2 value"),
        ({"group": 1.0}, r"re\['group'\]\['sd'\] must have 2 value"),
        (
            {"group": {"sd": [1.0, 2.0], "corr": [[1, 0.5]]}},
            r"re\['group'\]\['corr'\] must be a 2x2",
        ),
        ({"group": {"sds": [1.0, 2.0]}}, r"re\['group'\] takes keys 'sd'"),
        ({"group": [1.0, 2.0], "subject": 1.0}, r"re names grouping factor\(s\) \['subject'\]"),
        ({}, r"lacks \['group'\]"),
    ],
)
def test_bad_random_effects(re, message):
    with pytest.raises(ValueError, match=message):
        mb.model(FORMULA, seed004(), beta=BETA, sigma=1.0, re=re)


def test_non_psd_correlation_with_entries_inside_unit_interval():
    corr = [[1, 0.9, -0.9], [0.9, 1, 0.9], [-0.9, 0.9, 1]]
    with pytest.raises(ValueError, match=r"re\['group'\]\['corr'\] must be positive semidefinite"):
        _three_effects({"group": {"sd": [1, 1, 1], "corr": corr}})
    ok = _three_effects({"group": {"sd": [1, 0.5, 0.1], "corr": np.eye(3).tolist()}})
    np.testing.assert_allclose(sorted(ok.varcorr["sdcor"].iloc[:3]), [0.1, 0.5, 1.0])


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (
            dict(beta={"(Intercept)": 6.0, "slope": 4.0}, sigma=1.0, re=RE),
            ValueError,
            r"beta names \['slope'\] are not coefficients",
        ),
        (dict(beta=[6.0], sigma=1.0, re=RE), ValueError, r"beta must have 2 values"),
        (dict(beta=BETA, sigma=0.0, re=RE), ValueError, r"sigma must be a positive number"),
        (dict(beta=BETA, sigma=-1.0, re=RE), ValueError, r"sigma must be a positive number"),
        (dict(beta=BETA, sigma="one", re=RE), TypeError, r"sigma must be a number"),
        (
            dict(beta=BETA, sigma=1.0, re=RE, theta=[1.0, 0.0, 1.0]),
            ValueError,
            r"either as re=.* or as theta=.*not both",
        ),
        (
            dict(beta=BETA, sigma=1.0),
            ValueError,
            r"random effects are missing: give re=.* or theta=",
        ),
        (dict(beta=BETA, sigma=1.0, theta=[1.0, 0.0]), ValueError, r"theta must have 3 values"),
        (
            dict(beta=BETA, sigma=1.0, theta=[-1.0, 0.0, 1.0]),
            ValueError,
            r"theta has negative values",
        ),
        (dict(beta=BETA, sigma=1.0, re=[3.0, 2.0]), TypeError, r"re must be a dict"),
    ],
)
def test_bad_arguments(kwargs, error, message):
    with pytest.raises(error, match=message):
        mb.model(FORMULA, seed004(), **kwargs)


def test_usable_in_bootstrap_and_repr(m3):
    boot = mb.bootMer(mb.model(FORMULA, seed004(12), beta=BETA, sigma=1.0, re=RE), B=20, seed=1)
    assert boot.B == 20
    assert "from parameters" in repr(m3)
