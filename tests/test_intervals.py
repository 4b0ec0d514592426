"""Properties of the bootstrap interval functions in mixboot.intervals."""

import math
from statistics import NormalDist

import numpy as np
import pytest

from mixboot.intervals import (
    METHODS,
    basic,
    bootstrap_interval,
    normal,
    percentile,
    shortest,
)


def _brute_force_shortest_width(v, level):
    """Narrowest [v_i, v_j] holding at least ceil(level*n) sorted values."""
    v = np.sort(v)
    n = len(v)
    need = level * n
    best = math.inf
    for i in range(n):
        for j in range(i, n):
            if j - i + 1 >= need - 1e-9:
                best = min(best, v[j] - v[i])
                break  # larger j only widens the window
    return best


# -- percentile ---------------------------------------------------------------


@pytest.mark.parametrize("level", [0.5, 0.8, 0.9, 0.95, 0.99])
def test_percentile_matches_numpy_quantile(level):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(257, 3)) * [1.0, 5.0, 0.1] + [0.0, 3.0, -2.0]
    got = percentile(x, level)
    assert got.shape == (3, 2)
    want = np.quantile(x, [(1 - level) / 2, (1 + level) / 2], axis=0).T
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-14)


def test_percentile_ignores_nan_and_inf_per_column():
    rng = np.random.default_rng(2)
    x = rng.gamma(2.0, size=(200, 2))
    dirty = x.copy()
    dirty[[3, 50, 150], 0] = np.nan
    dirty[7, 1] = np.inf
    got = percentile(dirty, 0.9)
    np.testing.assert_allclose(got[0], np.quantile(np.delete(x[:, 0], [3, 50, 150]), [0.05, 0.95]))
    np.testing.assert_allclose(got[1], np.quantile(np.delete(x[:, 1], 7), [0.05, 0.95]))


def test_one_dimensional_input_is_one_statistic():
    got = percentile(np.arange(11.0), 0.8)
    np.testing.assert_allclose(got, [[1.0, 9.0]])


def test_three_dimensional_input_is_rejected():
    with pytest.raises(ValueError, match="samples"):
        percentile(np.zeros((2, 2, 2)))


# -- shortest -----------------------------------------------------------------


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("level", [0.5, 0.7, 0.9, 0.95])
def test_shortest_contains_level_and_is_narrowest(seed, level):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 80))
    v = rng.choice([rng.normal(size=n), rng.exponential(size=n), rng.integers(0, 6, size=n) * 1.0])
    lo, hi = shortest(v, level)[0]
    inside = np.count_nonzero((v >= lo) & (v <= hi))
    assert inside >= level * n - 1e-9
    assert lo in v and hi in v  # endpoints are observed values
    assert hi - lo == pytest.approx(_brute_force_shortest_width(v, level), abs=1e-12)


def test_shortest_takes_first_window_on_ties():
    np.testing.assert_array_equal(shortest([4.0, 3.0, 2.0, 1.0], 0.5), [[1.0, 2.0]])


def test_shortest_does_not_overcount_when_level_times_n_is_integral():
    # 0.55 * 100 evaluates to 55.00000000000001; 55 values are enough.
    assert 0.55 * 100 > 55
    np.testing.assert_array_equal(shortest(np.arange(100.0), 0.55), [[0.0, 54.0]])


def test_shortest_close_to_percentile_for_symmetric_unimodal_sample():
    x = np.random.default_rng(3).normal(size=20000)
    s = shortest(x, 0.9)[0]
    p = percentile(x, 0.9)[0]
    np.testing.assert_allclose(s, p, atol=0.05)


def test_shortest_is_narrower_and_left_of_percentile_for_skewed_sample():
    x = np.random.default_rng(4).exponential(size=5000)
    s = shortest(x, 0.9)[0]
    p = percentile(x, 0.9)[0]
    assert s[1] - s[0] < 0.9 * (p[1] - p[0])
    assert s[0] < p[0] and s[1] < p[1]


def test_shortest_ignores_nan_rows():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(100, 2))
    dirty = np.vstack([x[:40], np.full((5, 2), np.nan), x[40:]])
    np.testing.assert_array_equal(shortest(dirty, 0.8), shortest(x, 0.8))


# -- basic --------------------------------------------------------------------


def test_basic_is_percentile_reflected_about_estimate():
    rng = np.random.default_rng(6)
    x = rng.lognormal(size=(500, 2))
    est = np.array([1.3, 0.4])
    b = basic(x, est, 0.9)
    p = percentile(x, 0.9)
    np.testing.assert_allclose(b[:, 0], 2 * est - p[:, 1])
    np.testing.assert_allclose(b[:, 1], 2 * est - p[:, 0])
    # reflection: the midpoints are symmetric about the estimate
    np.testing.assert_allclose(b.mean(axis=1) + p.mean(axis=1), 2 * est)
    np.testing.assert_allclose(np.diff(b, axis=1), np.diff(p, axis=1))


def test_basic_broadcasts_scalar_estimate_and_checks_length():
    x = np.random.default_rng(7).normal(size=(50, 3))
    np.testing.assert_array_equal(basic(x, 0.5), basic(x, [0.5, 0.5, 0.5]))
    with pytest.raises(ValueError, match="estimate"):
        basic(x, [0.5, 0.5])


# -- normal -------------------------------------------------------------------


def test_normal_matches_boot_norm_ci_formula():
    x = np.array([[1.0, 10.0], [2.0, 12.0], [4.0, 11.0], [7.0, 15.0]])
    est = np.array([3.0, 12.5])
    z = NormalDist().inv_cdf(0.95)
    bias = x.mean(axis=0) - est
    sd = x.std(axis=0, ddof=1)
    want = np.column_stack([est - bias - z * sd, est - bias + z * sd])
    np.testing.assert_allclose(normal(x, est, 0.9), want)


def test_normal_corrects_for_bias():
    x = np.random.default_rng(8).normal(size=(300, 1))
    shifted = normal(x + 2.0, 0.0, 0.95)
    np.testing.assert_allclose(shifted, normal(x, 0.0, 0.95) - 2.0)


def test_normal_interval_covers_known_mean_at_nominal_rate():
    rng = np.random.default_rng(9)
    mu, sigma, n, B, reps = 3.0, 2.0, 400, 400, 1000
    se = sigma / math.sqrt(n)
    hits = 0
    for _ in range(reps):
        est = rng.normal(mu, se)  # sample mean of a normal sample
        boot = rng.normal(est, se, size=(B, 1))  # parametric bootstrap of the mean
        lo, hi = normal(boot, est, 0.95)[0]
        hits += lo <= mu <= hi
    # binomial sd of the coverage is ~0.007
    assert 0.925 <= hits / reps <= 0.975


# -- missing values and the dispatcher ----------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_column_without_finite_values_gives_nan(method):
    x = np.random.default_rng(10).normal(size=(30, 2))
    x[:, 1] = np.nan
    got = bootstrap_interval(x, method=method, level=0.9, estimate=[0.0, 0.0])
    assert np.all(np.isfinite(got[0]))
    assert np.all(np.isnan(got[1]))


@pytest.mark.parametrize("method", METHODS)
def test_dispatcher_agrees_with_functions_and_drops_nan_rows(method):
    rng = np.random.default_rng(11)
    x = rng.normal(size=(120, 2))
    est = np.array([0.1, -0.2])
    funcs = {
        "perc": lambda s: percentile(s, 0.8),
        "shortest": lambda s: shortest(s, 0.8),
        "basic": lambda s: basic(s, est, 0.8),
        "norm": lambda s: normal(s, est, 0.8),
    }
    dirty = np.insert(x, [5, 60], np.nan, axis=0)
    got = bootstrap_interval(dirty, method=method, level=0.8, estimate=est)
    np.testing.assert_allclose(got, funcs[method](x), rtol=0, atol=1e-14)


@pytest.mark.parametrize("method", ["percentile", "PERC", "bca", None, 1])
def test_unknown_method_is_named(method):
    with pytest.raises(ValueError, match="method"):
        bootstrap_interval(np.zeros((3, 1)), method=method, level=0.9)


@pytest.mark.parametrize("level", [0, 1, 1.5, -0.1, 95, float("nan")])
def test_bad_level_value_is_named(level):
    with pytest.raises(ValueError, match="level"):
        bootstrap_interval(np.zeros((3, 1)), method="perc", level=level)


@pytest.mark.parametrize("level", [True, "0.95", None])
def test_bad_level_type_is_named(level):
    with pytest.raises(TypeError, match="level"):
        bootstrap_interval(np.zeros((3, 1)), method="perc", level=level)
    with pytest.raises(TypeError, match="level"):
        shortest(np.zeros((3, 1)), level)


@pytest.mark.parametrize("method", ["basic", "norm"])
def test_missing_estimate_is_named(method):
    with pytest.raises(ValueError, match="estimate"):
        bootstrap_interval(np.zeros((3, 1)), method=method, level=0.9)


def test_dispatcher_options_are_keyword_only():
    with pytest.raises(TypeError):
        bootstrap_interval(np.zeros((3, 1)), "perc", 0.9)
