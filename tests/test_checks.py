"""mixboot.checks: numbers against the same draws computed by hand, p-value identities,
misfit detected, GLMMs, plots and bad input."""

import dataclasses

import numpy as np
import pandas as pd
import pytest

import mixboot as mb
from mixboot import checks

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


@pytest.fixture(scope="module")
def reaction():
    return mb.datasets.load("reaction")


@pytest.fixture(scope="module")
def r_int(reaction):
    return mb.fit("Reaction ~ Days + (1 | Subject)", data=reaction)


@pytest.fixture(scope="module")
def cbpp():
    return mb.fit(
        "cbind(incidence, size - incidence) ~ period + (1 | herd)",
        data=mb.datasets.load("cbpp"),
        family="binomial",
    )


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _grouped(values: np.ndarray, groups: pd.Series, how):
    """Per-group statistic of every column, by pandas: (ncol, ngroups)."""
    frame = pd.DataFrame(values).groupby(groups.to_numpy())
    return frame.agg(how).to_numpy().T


# -- numbers equal the same draws computed by hand -------------------------------------------
@pytest.mark.parametrize(
    "stat,how",
    [
        ("mean", "mean"),
        ("sd", "std"),
        ("median", "median"),
        (lambda v: v.max() - v.min(), lambda v: v.max() - v.min()),
    ],
)
def test_group_summary_equals_percentiles_of_simulate(r_int, reaction, stat, how):
    check = checks.group_summary(r_int, stat=stat, nsim=60, level=0.9, seed=7)
    Y = mb.simulate(r_int, nsim=60, seed=7)
    sims = _grouped(Y, reaction["Subject"], how)
    observed = _grouped(reaction[["Reaction"]].to_numpy(), reaction["Subject"], how)[0]
    lo, hi = np.percentile(sims, [5, 95], axis=0)
    t = check.table
    assert check.by == "Subject" and list(t.index) == sorted(reaction["Subject"].unique())
    np.testing.assert_allclose(check.simulated, sims, rtol=1e-12)
    np.testing.assert_allclose(t["observed"], observed, rtol=1e-12)
    np.testing.assert_allclose(t["lower"], lo, rtol=1e-12)
    np.testing.assert_allclose(t["upper"], hi, rtol=1e-12)
    outside = (observed < lo) | (observed > hi)
    np.testing.assert_array_equal(t["outside"], outside)
    assert check.share_outside == pytest.approx(outside.mean())
    assert check.expected_share == pytest.approx(0.1)


def test_group_summary_by_a_data_column(r_int, reaction):
    check = checks.group_summary(r_int, by="Days", nsim=30, seed=2)
    Y = mb.simulate(r_int, nsim=30, seed=2)
    assert check.by == "Days" and list(check.table.index) == list(range(10))
    np.testing.assert_allclose(check.simulated, _grouped(Y, reaction["Days"], "mean"), rtol=1e-12)


def test_density_equals_quantiles_of_simulate(r_int, reaction):
    check = checks.density(r_int, nsim=40, seed=3, level=0.8)
    Y = mb.simulate(r_int, nsim=40, seed=3)
    y = reaction["Reaction"].to_numpy()
    np.testing.assert_array_equal(check.simulated, Y)
    np.testing.assert_array_equal(check.observed, y)
    q = check.quantiles
    sim_q = np.quantile(Y, q["prob"], axis=0)  # (nprob, nsim)
    np.testing.assert_allclose(q["observed"], np.quantile(y, q["prob"]))
    np.testing.assert_allclose(q["lower"], np.percentile(sim_q, 10, axis=1))
    np.testing.assert_allclose(q["upper"], np.percentile(sim_q, 90, axis=1))
    np.testing.assert_allclose(q["median"], np.median(sim_q, axis=1))
    assert check.share_mean_above == np.mean(Y.mean(axis=0) > y.mean())
    assert check.share_sd_above == np.mean(Y.std(axis=0, ddof=1) > y.std(ddof=1))


def test_statistic_equals_by_hand(r_int, reaction):
    def T(y, res):
        return float(np.mean((y - res.fittedvalues) ** 3))

    check = checks.statistic(r_int, T, nsim=80, seed=4, alternative="greater")
    Y = mb.simulate(r_int, nsim=80, seed=4)
    sims = np.array([T(Y[:, j], r_int) for j in range(80)])
    obs = T(reaction["Reaction"].to_numpy(), r_int)
    np.testing.assert_array_equal(check.simulated, sims)
    assert check.observed == obs and check.nsim == 80 and check.n_nan == 0
    assert check.p_greater == (1 + np.sum(sims >= obs)) / 81
    assert check.p_less == (1 + np.sum(sims <= obs)) / 81
    assert check.p_value == check.p_greater


def test_seed_reproducible(r_int):
    a = checks.group_summary(r_int, nsim=20, seed=11)
    b = checks.group_summary(r_int, nsim=20, seed=11)
    c = checks.group_summary(r_int, nsim=20, seed=12)
    pd.testing.assert_frame_equal(a.table, b.table)
    assert not np.array_equal(a.simulated, c.simulated)
    T = lambda y, res: float(np.std(y))  # noqa: E731
    assert (
        checks.statistic(r_int, T, nsim=20, seed=5).p_value
        == checks.statistic(r_int, T, nsim=20, seed=5).p_value
    )


# -- p-values --------------------------------------------------------------------------------
def test_p_value_identities(r_int):
    T = lambda y, res: float(np.median(y))  # noqa: E731
    by_alt = {
        alt: checks.statistic(r_int, T, nsim=99, seed=8, alternative=alt)
        for alt in ("two-sided", "greater", "less")
    }
    two, greater, less = by_alt["two-sided"], by_alt["greater"], by_alt["less"]
    assert greater.p_value == two.p_greater and less.p_value == two.p_less
    ties = np.sum(two.simulated == two.observed)
    # each of the two one-sided counts includes the ties and the observed dataset itself
    assert two.p_greater + two.p_less == pytest.approx(1 + (1 + ties) / 100)
    assert two.p_value == min(1.0, 2 * min(two.p_greater, two.p_less))


def test_plus_one_correction_bounds_p(r_int, reaction):
    y_obs = reaction["Reaction"].to_numpy()

    def T(y, res):
        return float(np.array_equal(y, y_obs))  # 1 for the observed, 0 simulated

    check = checks.statistic(r_int, T, nsim=49, seed=1)
    assert check.p_greater == 1 / 50 and check.p_less == 1.0
    assert check.p_value == 2 / 50


def test_nan_statistics_are_counted_and_left_out(r_int):
    def T(y, res):
        return np.nan if y[0] > 250 else float(y.mean())

    with pytest.warns(RuntimeWarning, match="NaN for"):
        check = checks.statistic(r_int, T, nsim=60, seed=2)
    Y = mb.simulate(r_int, nsim=60, seed=2)
    n_nan = int(np.sum(Y[0] > 250))
    assert 0 < n_nan < 60
    assert check.n_nan == n_nan and check.nsim == 60 - n_nan
    assert not np.isnan(check.simulated).any()
    assert check.p_greater == (1 + np.sum(check.simulated >= check.observed)) / (61 - n_nan)


def test_nan_everywhere_or_observed_is_an_error(r_int):
    with pytest.raises(ValueError, match="observed"):
        checks.statistic(r_int, lambda y, res: np.nan, nsim=5, seed=1)
    observed = r_int.y
    with pytest.raises(ValueError, match="all 5"):
        checks.statistic(r_int, lambda y, res: 1.0 if y is observed else np.nan, nsim=5, seed=1)


# -- misfit detected, a good fit not ---------------------------------------------------------
def _random_intercepts(spread_differs: bool) -> pd.DataFrame:
    """30 groups x 20 rows from a random-intercept model; the residual SD is 2 in every
    group, or (spread_differs) drawn per group from ~0.1 to ~30."""
    rng = np.random.default_rng(3)
    g = np.repeat(np.arange(30), 20)
    intercepts = rng.normal(0, 1, 30)[g]
    noise = rng.normal(size=g.size)
    sd = np.exp(rng.normal(0, 1.2, 30)) if spread_differs else np.full(30, 2.0)
    return pd.DataFrame({"g": [f"g{i:02d}" for i in g], "y": 1 + intercepts + noise * sd[g]})


def test_group_sd_detects_unequal_residual_spread():
    bad = mb.fit("y ~ 1 + (1 | g)", data=_random_intercepts(spread_differs=True))
    good = mb.fit("y ~ 1 + (1 | g)", data=_random_intercepts(spread_differs=False))
    assert checks.group_summary(bad, stat="sd", nsim=200, seed=1).share_outside > 0.5
    assert checks.group_summary(good, stat="sd", nsim=200, seed=1).share_outside < 0.2


def test_dispersion_statistic_detects_overdispersed_counts():
    rng = np.random.default_rng(3)
    g = np.repeat(np.arange(25), 12)
    mu = np.exp(1.0 + rng.normal(0, 0.5, 25)[g])
    data = pd.DataFrame({"g": [f"g{i:02d}" for i in g]})
    counts = np.bincount(g)

    def dispersion(y, res):
        """Mean over groups of the within-group variance-to-mean ratio (1 for Poisson;
        a group of zeros counts as 1)."""
        mean = np.bincount(g, y) / counts
        var = np.bincount(g, (y - mean[g]) ** 2) / (counts - 1)
        return float(np.mean(np.divide(var, mean, out=np.ones_like(var), where=mean > 0)))

    over = mb.fit(
        "y ~ 1 + (1 | g)",
        family="poisson",
        data=data.assign(y=rng.negative_binomial(2.0, 2 / (2 + mu))),
    )
    poisson = mb.fit("y ~ 1 + (1 | g)", family="poisson", data=data.assign(y=rng.poisson(mu)))

    def p_value(fit):
        return checks.statistic(fit, dispersion, nsim=199, seed=1, alternative="greater").p_value

    assert p_value(over) < 0.01
    assert p_value(poisson) > 0.05


# -- GLMM --------------------------------------------------------------------------------------
def test_glmm_binomial_checks_use_proportions(cbpp):
    data = cbpp.spec.data
    prop = (data["incidence"] / data["size"]).to_numpy()
    dens = checks.density(cbpp, nsim=30, seed=1)
    np.testing.assert_allclose(dens.observed, prop)
    np.testing.assert_array_equal(dens.simulated, mb.simulate(cbpp, nsim=30, seed=1))
    assert ((dens.simulated >= 0) & (dens.simulated <= 1)).all()

    groups = checks.group_summary(cbpp, nsim=100, seed=1)
    assert groups.by == "herd" and len(groups.table) == 15
    np.testing.assert_allclose(
        groups.table["observed"],
        pd.Series(prop).groupby(data["herd"].to_numpy()).mean().loc[groups.table.index.to_numpy()],
        rtol=1e-12,
    )
    assert groups.share_outside <= 0.2

    zeros = checks.statistic(cbpp, lambda y, res: float(np.mean(y == 0)), nsim=100, seed=1)
    assert 0.05 < zeros.p_value <= 1


# -- plots -------------------------------------------------------------------------------------
def test_density_plot_draws_every_draw_and_the_observed(r_int):
    check = checks.density(r_int, nsim=25, seed=1)
    ax = check.plot()
    assert len(ax.patches) == 26  # 25 outlines + the observed
    assert [p.get_gid() for p in ax.patches] == ["simulated"] * 25 + ["observed"]
    _, given = plt.subplots()
    assert check.plot(ax=given) is given and len(given.patches) == 26


def test_group_plot_highlights_the_outside_groups():
    fit = mb.fit("y ~ 1 + (1 | g)", data=_random_intercepts(spread_differs=True))
    check = checks.group_summary(fit, stat="sd", nsim=100, seed=1)
    n_out = int(check.table["outside"].sum())
    assert 0 < n_out < 30
    _, ax = plt.subplots()
    assert check.plot(ax=ax) is ax
    (bars,) = ax.collections
    assert len(bars.get_segments()) == 30
    inside, outside = ax.lines
    assert len(outside.get_xdata()) == n_out and len(inside.get_xdata()) == 30 - n_out
    gids = (inside.get_gid(), outside.get_gid(), bars.get_gid())
    assert gids == ("observed", "outside", "interval")
    assert outside.get_color() == "red"
    np.testing.assert_allclose(outside.get_ydata(), check.table["observed"][check.table["outside"]])
    assert [t.get_text() for t in ax.get_xticklabels()] == list(check.table.index)


def test_statistic_plot_marks_the_observed(r_int):
    check = checks.statistic(r_int, lambda y, res: float(np.std(y)), nsim=50, seed=1)
    ax = check.plot(bins=12)
    assert len(ax.patches) == 12
    (line,) = ax.lines
    assert line.get_gid() == "observed"
    np.testing.assert_allclose(line.get_xdata(), [check.observed, check.observed])
    assert sum(p.get_height() for p in ax.patches) == 50


# -- immutability and bad input ----------------------------------------------------------------
def test_results_are_immutable(r_int):
    check = checks.statistic(r_int, lambda y, res: float(np.std(y)), nsim=5, seed=1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        check.p_value = 0.5
    with pytest.raises(ValueError):
        check.simulated[0] = 1.0


@pytest.mark.parametrize("nsim", [0, -3, 2.5, True, "10", None])
def test_bad_nsim(r_int, nsim):
    T = lambda y, res: 0.0  # noqa: E731
    for call in (
        lambda: checks.density(r_int, nsim=nsim),
        lambda: checks.group_summary(r_int, nsim=nsim),
        lambda: checks.statistic(r_int, T, nsim=nsim),
    ):
        with pytest.raises(ValueError, match="nsim"):
            call()


@pytest.mark.parametrize("level", [0, 1, 1.5, -0.1, "0.9", True])
def test_bad_level(r_int, level):
    with pytest.raises(ValueError, match="level"):
        checks.group_summary(r_int, level=level)
    with pytest.raises(ValueError, match="level"):
        checks.density(r_int, level=level)


def test_bad_alternative_by_stat_and_T(r_int):
    with pytest.raises(ValueError, match="alternative"):
        checks.statistic(r_int, lambda y, res: 0.0, alternative="two.sided")
    with pytest.raises(TypeError, match="T must be a callable"):
        checks.statistic(r_int, "kurtosis")
    with pytest.raises(ValueError, match="by must be .*'Subject'"):
        checks.group_summary(r_int, by="subject")
    with pytest.raises(ValueError, match="stat must be one of"):
        checks.group_summary(r_int, stat="mode")
