"""bootMer: agreement with lme4's bootstrap, reproducibility, failures, refit equality."""

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import mixboot as mb
from mixboot.optimize import minimize_theta
from mixboot.simulate import simulate

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared"


def _shared(*parts):
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"reference data not found at {path}")
    return path


def _ref_cases():
    path = SHARED / "reference" / "lme4_bootstrap.json"
    return json.loads(path.read_text()) if path.exists() else []


DATASET = {"sleepstudy_ml": "sleepstudy", "dyestuff_ml": "dyestuff"}


@pytest.fixture(scope="module")
def sleep_ml():
    df = pd.read_csv(_shared("data", "sleepstudy.csv"))
    return mb.fit("Reaction ~ 1 + Days + (1 + Days|Subject)", df, REML=False)


@pytest.mark.parametrize("case", _ref_cases(), ids=lambda c: c["id"])
def test_quantiles_match_lme4_bootstrap(case):
    """Share of our replicates below each of lme4's quantiles, within Monte Carlo error.

    If lme4's q-quantile of B draws is x_q, the share of our B independent draws
    below x_q has variance ~ q(1-q)/B from our sample plus ~ q(1-q)/B from the
    error in x_q itself (on the probability scale), so the share lies within
    q +- 3 sqrt(2 q (1-q) / B) with probability ~0.997 per check.  Where x_q sits
    on an atom (a singular fit's theta = 0 exactly) the check is the tie-aware
    P(X < x_q) - tol <= q <= P(X <= x_q) + tol.
    """
    dataset = DATASET.get(case["id"]) or case["id"].rsplit("_", 1)[0]
    df = pd.read_csv(_shared("data", f"{dataset}.csv"))
    fit = mb.fit(case["formula"], df, REML=case["REML"])
    B = case["nsim"]
    boot = mb.bootMer(fit, B=B, seed=20261121)
    assert list(boot.names) == case["names"]
    np.testing.assert_allclose(boot.estimate, case["estimate"], rtol=1e-4, atol=1e-4)
    for q, key in [(0.025, "q025"), (0.5, "q50"), (0.975, "q975")]:
        tol = 3 * np.sqrt(2 * q * (1 - q) / B)
        for j, name in enumerate(boot.names):
            x, xq = boot.estimates[:, j], case[key][j]
            eps = 1e-7 * (1 + abs(xq))
            below, at_or_below = np.mean(x < xq - eps), np.mean(x <= xq + eps)
            assert below - tol <= q <= at_or_below + tol, (name, key, below, at_or_below)
    # Singular replicates: a binomial count; both samples have sd ~ sqrt(B p (1-p)).
    p_sing = case["n_singular_theta"] / B
    sd = np.sqrt(2 * B * max(p_sing, 1 / B) * (1 - p_sing))
    assert abs(boot.n_singular - case["n_singular_theta"]) <= 3 * sd + 1


def test_replicates_equal_from_scratch_fits(sleep_ml):
    """The batched fast path finds the same optimum as a fresh BOBYQA fit of each y*."""
    boot = mb.bootMer(sleep_ml, B=40, seed=7)
    Y = simulate(sleep_ml, 40, seed=7)
    ws = sleep_ml.model.workspace
    spec = sleep_ml.spec
    for b in range(40):
        resp = ws.responses(Y[:, b : b + 1])
        opt = minimize_theta(
            lambda th, resp=resp: float(ws.factorize(th[None], resp).objective[0]),
            spec.theta_start,
            spec.lower_bounds,
            warn=False,
        )
        ours = boot.diagnostics["objective"].iloc[b]
        # the fast path is never worse than the from-scratch optimum (beyond rounding)
        assert ours <= opt.fmin + 1e-8 * abs(opt.fmin)
        assert abs(ours - opt.fmin) <= 1e-6 * abs(opt.fmin)
        theta = boot.estimates[b, -3:]
        np.testing.assert_allclose(theta, opt.theta, atol=2e-3)
        scratch = mb.fit(
            "Reaction ~ 1 + Days + (1 + Days|Subject)",
            spec.data.assign(Reaction=Y[:, b]),
            REML=False,
        )
        np.testing.assert_allclose(boot.estimates[b, :2], scratch.beta, rtol=1e-4, atol=1e-3)
        np.testing.assert_allclose(boot.estimates[b, 2], scratch.sigma, rtol=1e-4)


def test_reproducible_for_any_n_jobs(sleep_ml):
    one = mb.bootMer(sleep_ml, B=300, seed=11)
    two = mb.bootMer(sleep_ml, B=300, seed=11, n_jobs=2)
    assert np.array_equal(one.estimates, two.estimates)
    assert one.diagnostics.equals(two.diagnostics)
    other = mb.bootMer(sleep_ml, B=300, seed=12)
    assert not np.array_equal(one.estimates, other.estimates)


def test_replicate_i_refits_simulate_column_i(sleep_ml):
    boot = mb.bootMer(sleep_ml, B=5, seed=3)
    Y = mb.simulate(sleep_ml, 5, seed=3)
    for b in range(5):
        r = mb.fit(
            "Reaction ~ 1 + Days + (1 + Days|Subject)",
            sleep_ml.spec.data.assign(Reaction=Y[:, b]),
            REML=False,
        )
        np.testing.assert_allclose(boot.estimates[b, :2], r.beta, rtol=1e-4)


def test_custom_statistic_and_failures(sleep_ml):
    calls = {"n": 0}

    def stat(r):
        calls["n"] += 1
        if calls["n"] == 4:  # replicate 2: the first call is on the original fit
            raise RuntimeError("boom")
        return pd.Series({"slope": r.fe_params["Days"], "sd": r.sigma})

    with pytest.warns(RuntimeWarning, match="1 of 10 bootstrap replicates failed"):
        boot = mb.bootMer(sleep_ml, statistic=stat, B=10, seed=1)
    assert boot.names == ("slope", "sd")
    assert boot.estimates.shape == (10, 2)
    assert boot.n_failed == 1
    assert np.isnan(boot.estimates[2]).all()
    assert np.isfinite(np.delete(boot.estimates, 2, axis=0)).all()
    row = boot.failures.iloc[0]
    assert (row["replicate"], row["stage"]) == (2, "statistic") and "boom" in row["message"]
    assert boot.diagnostics["error"].iloc[2] is not None
    # the default statistic's slope equals the custom one where both exist
    plain = mb.bootMer(sleep_ml, B=10, seed=1)
    keep = np.arange(10) != 2
    np.testing.assert_allclose(boot.estimates[keep, 0], plain.estimates[keep, 1], rtol=1e-10)


def test_on_error_raise(sleep_ml):
    def bad(r):
        raise ValueError("bad statistic")

    with pytest.raises(ValueError, match="bad statistic"):
        mb.bootMer(sleep_ml, statistic=bad, B=3, seed=1, on_error="raise")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"B": 0}, "B must"),
        ({"n_jobs": 0}, "n_jobs"),
        ({"tol": 2.0}, "tol"),
        ({"on_error": "skip"}, "on_error"),
        ({"statistic": 3}, "statistic"),
        ({"seed": -1}, "seed"),
        ({"sigma": -1.0}, "sigma"),
        ({"theta": [1.0]}, "theta"),
        ({"beta": {"Day": 1.0}}, "beta"),
    ],
)
def test_bad_arguments(sleep_ml, kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        mb.bootMer(sleep_ml, **{"B": 3, **kwargs})


def test_other_parameters_and_tolerance(sleep_ml):
    boot = mb.bootMer(sleep_ml, B=200, seed=5, beta={"(Intercept)": 0.0, "Days": 0.0})
    assert abs(np.mean(boot.estimates[:, 1])) < 4 * 1.6 / np.sqrt(200) + 0.5
    loose = mb.bootMer(sleep_ml, B=200, seed=5, tol=1e-6)
    tight = mb.bootMer(sleep_ml, B=200, seed=5)
    assert loose.diagnostics["evaluations"].sum() <= tight.diagnostics["evaluations"].sum()
    np.testing.assert_allclose(loose.estimates[:, :3], tight.estimates[:, :3], rtol=1e-3, atol=1e-2)


def test_tbl_and_intervals(sleep_ml):
    boot = mb.bootMer(sleep_ml, B=200, seed=9)
    tbl = boot.tbl
    for col in [
        "objective",
        "(Intercept)",
        "Days",
        "sigma",
        "sd_Subject_(Intercept)",
        "sd_Subject_Days",
        "cor_Subject_(Intercept)_Days",
    ]:
        assert col in tbl.columns
    assert (
        (tbl["cor_Subject_(Intercept)_Days"].abs() <= 1 + 1e-12)
        | tbl["cor_Subject_(Intercept)_Days"].isna()
    ).all()
    np.testing.assert_allclose(tbl["sigma"], boot.estimates[:, 2])
    short = boot.ci(method="shortest")
    perc = boot.ci(method="perc")
    assert np.all(short[:, 1] - short[:, 0] <= perc[:, 1] - perc[:, 0] + 1e-12)
    assert boot.issingular().sum() == boot.n_singular


def test_save_load_and_concat(sleep_ml, tmp_path):
    a = mb.bootMer(sleep_ml, B=20, seed=1)
    b = mb.bootMer(sleep_ml, B=30, seed=2)
    both = mb.concat([a, b])
    assert both.B == 50
    path = tmp_path / "boot.parquet"
    both.save(path)
    back = mb.BootResult.load(path)
    assert np.array_equal(back.estimates, both.estimates)
    with pytest.raises(ValueError):
        mb.concat([a, a])
    other = mb.fit("Reaction ~ 1 + Days + (1|Subject)", sleep_ml.spec.data, REML=False)
    with pytest.raises(ValueError, match="different models"):
        mb.concat([a, mb.bootMer(other, B=5, seed=3)])


def test_progress_bar_runs(sleep_ml, capsys):
    boot = mb.bootMer(sleep_ml, B=20, seed=1, show_progress=True)
    assert boot.B == 20
    assert "20/20" in capsys.readouterr().err


def test_crossed_reml_bootstrap_matches_scratch():
    df = pd.read_csv(_shared("data", "penicillin.csv"))
    fit = mb.fit("diameter ~ 1 + (1|plate) + (1|sample)", df)
    boot = mb.bootMer(fit, B=10, seed=4)
    Y = simulate(fit, 10, seed=4)
    for b in range(10):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            r = mb.fit("diameter ~ 1 + (1|plate) + (1|sample)", df.assign(diameter=Y[:, b]))
        assert boot.diagnostics["objective"].iloc[b] <= r.objective + 1e-8 * abs(r.objective)
        np.testing.assert_allclose(boot.estimates[b, :2], [r.beta[0], r.sigma], rtol=1e-4)


# --------------------------------------------------------------------------- statistics
@pytest.mark.parametrize(
    "value, match",
    [
        ({"a": 1.0, "b": [1, 2]}, "dict whose values must be single numbers"),
        ({}, "it is empty"),
        ("slope", "returned a str"),
        (np.ones((2, 2)), r"array of shape \(2, 2\)"),
        (None, "returned None"),
        (["a", "b"], "must return numbers"),
        (np.array([]), "empty vector"),
    ],
)
def test_statistic_is_checked_on_the_original_fit_before_any_replicate(
    sleep_ml, monkeypatch, value, match
):
    from mixboot import runner

    monkeypatch.setattr(runner, "run", lambda *a, **k: pytest.fail("replicates ran"))
    with pytest.raises(TypeError, match=match):
        mb.bootMer(sleep_ml, statistic=lambda r: value, B=1000, seed=1)


@pytest.mark.parametrize(
    "statistic, names",
    [
        (lambda r: {"slope": r.fe_params["Days"], "sd": r.sigma}, ("slope", "sd")),
        (lambda r: r.fe_params, ("(Intercept)", "Days")),
        (lambda r: r.sigma, ("stat0",)),
        (lambda r: [r.sigma, r.objective], ("stat0", "stat1")),
        (lambda r: np.float32(r.sigma), ("stat0",)),
    ],
)
def test_statistic_shapes_accepted(sleep_ml, statistic, names):
    boot = mb.bootMer(sleep_ml, statistic=statistic, B=6, seed=2)
    assert boot.names == names and boot.estimates.shape == (6, len(names))
    assert np.isfinite(boot.estimates).all() and boot.n_failed == 0
    np.testing.assert_allclose(
        boot.estimate,
        np.atleast_1d(
            np.asarray(
                list(statistic(sleep_ml).values())
                if isinstance(statistic(sleep_ml), dict)
                else statistic(sleep_ml),
                dtype=float,
            )
        ),
    )


def test_statistic_nan_is_counted_and_a_bad_replicate_value_is_a_failure(sleep_ml):
    calls = {"n": 0}

    def stat(r):
        calls["n"] += 1
        if calls["n"] in (3, 6):  # replicates 1 and 4 (call 1 is the original fit)
            return {"slope": np.nan, "sd": r.sigma}
        if calls["n"] == 8:  # replicate 6: None
            return None
        if calls["n"] == 9:  # replicate 7: the wrong width
            return {"slope": 1.0}
        return {"slope": r.fe_params["Days"], "sd": r.sigma}

    with pytest.warns(RuntimeWarning) as record:
        boot = mb.bootMer(sleep_ml, statistic=stat, B=10, seed=1)
    messages = " ".join(str(w.message) for w in record)
    assert "the statistic returned NaN in 2 of 10 replicates" in messages
    assert "2 of 10 bootstrap replicates failed" in messages
    assert boot.diagnostics["stat_nan"].tolist() == [0, 1, 0, 0, 1, 0, 0, 0, 0, 0]
    assert boot.failures["replicate"].tolist() == [6, 7]
    assert "returned None" in boot.failures["message"].iloc[0]
    assert "returned 1 values, expected 2" in boot.failures["message"].iloc[1]
    assert "statistic NaN in 2 replicates" in boot.summary()


def test_bootMer_method_is_the_function(sleep_ml):
    assert type(sleep_ml).bootMer is mb.bootMer
    a = sleep_ml.bootMer(B=7, seed=3)
    assert a.estimates.tobytes() == mb.bootMer(sleep_ml, B=7, seed=3).estimates.tobytes()


def test_options_after_show_progress_are_keyword_only(sleep_ml):
    with pytest.raises(TypeError):
        mb.bootMer(sleep_ml, None, 5, 1, False, 2)


def test_sparse_path_bits_do_not_depend_on_B(monkeypatch):
    """The sparse workspace (InstEval-sized models) refits one replicate at a time."""
    from mixboot import workspace

    monkeypatch.setattr(workspace, "_DENSE_LIMIT", 0)
    fit = mb.fit("Reaction ~ 1 + Days + (1 | Subject)", mb.datasets.load("reaction"), REML=False)
    assert not fit.model.workspace.dense
    a = mb.bootMer(fit, B=3, seed=9)
    b = mb.bootMer(fit, B=5, seed=9)
    assert a.estimates.tobytes() == b.estimates[:3].tobytes()
    monkeypatch.setattr(workspace, "_DENSE_LIMIT", 400_000)
    dense = mb.fit("Reaction ~ 1 + Days + (1 | Subject)", mb.datasets.load("reaction"), REML=False)
    np.testing.assert_allclose(mb.bootMer(dense, B=3, seed=9).estimates, a.estimates, rtol=1e-5)


# --------------------------------------------------------------------------- reported scale
def test_confint_rows_are_lme4s_reported_parameters(tmp_path):
    """confint() rows are lme4's confint(oldNames = FALSE) names, in lme4's order."""
    from conftest import has_shared, load_data

    if not has_shared():
        pytest.skip("../shared is not beside the project root")
    cases = json.loads(_shared("reference", "lmertest_inference.json").read_text())
    for case in cases:
        fit = mb.fit(case["formula"], load_data(case["dataset"]), REML=case["REML"])
        boot = mb.bootMer(fit, B=30, seed=1)
        ci = boot.confint()
        assert list(ci.index) == case["profile_names"], case["id"]
        est = boot.reported_estimate()
        assert est["sigma"] == fit.sigma
        for name in fit.spec.fe_names:
            assert est[name] == fit.fe_params[name]
        assert np.all(ci["lower"] <= ci["upper"])
    back = tmp_path / "b.parquet"
    boot.save(back)
    assert mb.BootResult.load(back).confint().equals(boot.confint())


def test_confint_values_sd_cor_and_theta_rows(sleep_ml):
    boot = mb.bootMer(sleep_ml, B=200, seed=3)
    rep = boot.reported()
    sd = boot.tbl["sd_Subject_Days"]
    np.testing.assert_array_equal(rep["sd_Days|Subject"], sd)
    ci = boot.confint("perc", 0.9)
    np.testing.assert_allclose(ci.loc["sd_Days|Subject"], np.percentile(sd, [5, 95]))
    vc = sleep_ml.varcorr
    slope_sd = float(vc[(vc.grp == "Subject") & (vc.var1 == "Days") & vc.var2.isna()].sdcor.iloc[0])
    assert boot.reported_estimate()["sd_Days|Subject"] == pytest.approx(slope_sd, rel=1e-12)
    with_theta = boot.confint(theta=True)
    assert list(with_theta.index[-3:]) == [
        "theta_Subject.(Intercept)",
        "theta_Subject.Days.(Intercept)",
        "theta_Subject.Days",
    ]
    np.testing.assert_array_equal(with_theta.iloc[-3:].to_numpy(), boot.ci()[-3:])
    with pytest.raises(ValueError, match="'bca' is not offered"):
        boot.confint("bca")
    with pytest.raises(ValueError, match="'bca' is not offered"):
        boot.ci("bca")
    custom = mb.bootMer(sleep_ml, lambda r: {"slope": r.fe_params["Days"]}, B=20, seed=1)
    assert list(custom.confint().index) == ["slope"]
