"""bootMer on a GLMM: lme4's bootstrap distribution of cbpp, same bits on the replicate
runner, checkpoints, failures, and intervals on the reported scale."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import mixboot as mb
from conftest import shared_dir
from mixboot import checkpoint, runner

CBPP = "cbind(incidence, size - incidence) ~ period + (1 | herd)"
QUANTILES = {"q025": 0.025, "q25": 0.25, "q50": 0.5, "q75": 0.75, "q975": 0.975}


@pytest.fixture(scope="module")
def cbpp_fit():
    return mb.fit(CBPP, data=mb.datasets.load("cbpp"), family="binomial")


@pytest.fixture(scope="module")
def boot40(cbpp_fit):
    return mb.bootMer(cbpp_fit, B=40, seed=11)


def _lme4_reference() -> dict:
    path = shared_dir() / "reference" / "lme4_glmer_bootstrap.json"
    if not path.is_file():
        pytest.skip(f"lme4 GLMM bootstrap reference not found at {path}")
    with open(path) as fh:
        (case,) = [c for c in json.load(fh) if c["id"] == "cbpp_binomial"]
    return case


# --------------------------------------------------------------------------- lme4
def test_cbpp_distribution_matches_lme4_bootMer(cbpp_fit):
    ref = _lme4_reference()
    B = ref["nsim"]
    boot = mb.bootMer(cbpp_fit, B=B, seed=20261122)
    # lme4's c(fixef(x), getME(x, "theta")) under lme4's names
    assert boot.names == tuple(ref["names"])
    # lme4 stops its fit earlier than ours
    np.testing.assert_allclose(boot.estimate, ref["estimate"], rtol=1e-3, atol=1e-3)
    assert boot.n_failed == 0 and boot.n_nonconverged == 0
    # Two independent samples of B draws: our share below lme4's q-quantile is
    # within q +- 3 sqrt(2 q (1 - q) / B) (../shared/reference/README.md).
    for j, name in enumerate(ref["names"]):
        for key, q in QUANTILES.items():
            share = np.mean(boot.estimates[:, j] < ref[key][j])
            allowance = 3 * np.sqrt(2 * q * (1 - q) / B)
            assert abs(share - q) <= allowance, (name, key, share)


# --------------------------------------------------------------------------- same bits
def test_replicates_do_not_depend_on_B(cbpp_fit, boot40):
    boot20 = mb.bootMer(cbpp_fit, B=20, seed=11)
    assert boot20.estimates.tobytes() == boot40.estimates[:20].tobytes()
    assert boot20.tbl.equals(boot40.tbl.iloc[:20])


def test_replicates_do_not_depend_on_workers(cbpp_fit, boot40, monkeypatch):
    # small chunks and no start-up threshold, so two processes really share the run
    monkeypatch.setattr(runner, "MIN_SHARED_CHUNK", 4)
    monkeypatch.setattr(runner, "PARALLEL_MIN_SECONDS", 0.0)
    two = mb.bootMer(cbpp_fit, B=40, seed=11, n_jobs=2)
    assert two.estimates.tobytes() == boot40.estimates.tobytes()
    assert two.tbl.equals(boot40.tbl)
    assert two.diagnostics.equals(boot40.diagnostics)


def test_replicate_i_refits_simulate_column_i(cbpp_fit, boot40):
    Y = mb.simulate(cbpp_fit, 3, seed=11)
    k = cbpp_fit.spec.n_theta
    refits = cbpp_fit.model.refit(Y.T, start=np.concatenate([cbpp_fit.theta, cbpp_fit.beta]))
    assert np.column_stack([refits.beta, refits.theta]).tobytes() == boot40.estimates[:3].tobytes()
    assert boot40.estimates.shape == (40, cbpp_fit.spec.p + k)


def test_checkpoint_resume_after_interrupt_equals_straight_run(
    cbpp_fit, boot40, tmp_path, monkeypatch
):
    monkeypatch.setattr(checkpoint, "CHECKPOINT_INTERVAL", 0.0)  # write every chunk at once
    monkeypatch.setattr(runner, "chunk_size", lambda *models: 8)
    calls = {"n": 0}
    real = runner._call

    def interrupted(*args):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(runner, "_call", interrupted)
    with pytest.raises(KeyboardInterrupt):
        mb.bootMer(cbpp_fit, B=40, seed=11, checkpoint=tmp_path / "ck")
    monkeypatch.setattr(runner, "_call", real)
    resumed = mb.bootMer(cbpp_fit, B=40, seed=None, checkpoint=tmp_path / "ck")
    assert resumed.meta["checkpoint"] == {"loaded": 16, "computed": 24}
    assert resumed.estimates.tobytes() == boot40.estimates.tobytes()
    assert resumed.tbl.equals(boot40.tbl) and resumed.diagnostics.equals(boot40.diagnostics)


def test_checkpoint_tells_models_apart(cbpp_fit, tmp_path):
    ck = tmp_path / "ck"
    mb.bootMer(cbpp_fit, B=4, seed=1, checkpoint=ck)
    probit = mb.fit(CBPP, data=mb.datasets.load("cbpp"), family="binomial", link="probit")
    with pytest.raises(ValueError, match="link: checkpoint has 'logit'"):
        mb.bootMer(probit, B=4, seed=1, checkpoint=ck)


# --------------------------------------------------------------------------- statistics
def test_custom_statistic_sees_each_replicate_fit_and_failures_are_recorded(cbpp_fit, boot40):
    bad = boot40.diagnostics["objective"].iloc[3]

    def stat(r):
        if r.objective == bad:
            raise RuntimeError("boom")
        return {
            "period4": r.fe_params["period4"],
            "sd": r.varcorr["sdcor"].iloc[0],
            "deviance": r.objective,
            "y": r.y.sum(),
        }

    with pytest.warns(RuntimeWarning, match="1 of 8 bootstrap replicates failed"):
        boot = mb.bootMer(cbpp_fit, stat, B=8, seed=11)
    assert boot.names == ("period4", "sd", "deviance", "y")
    assert boot.failures[["replicate", "stage"]].values.tolist() == [[3, "statistic"]]
    assert "boom" in boot.failures["message"].iloc[0]
    assert np.isnan(boot.estimates[3]).all()
    keep = np.arange(8) != 3
    # the replicate's own fit: its beta, theta (= the SD, sigma 1), deviance and response
    ref = boot40.estimates[:8][keep]
    assert boot.estimates[keep, 0].tobytes() == ref[:, 3].tobytes()
    assert boot.estimates[keep, 1].tobytes() == ref[:, 4].tobytes()
    np.testing.assert_allclose(
        boot.estimates[keep, 2], boot40.diagnostics["objective"].to_numpy()[:8][keep], rtol=1e-12
    )
    Y = mb.simulate(cbpp_fit, 8, seed=11)
    np.testing.assert_allclose(boot.estimates[keep, 3], Y.sum(axis=0)[keep], rtol=1e-12)
    # the original fit's statistic is the estimate
    assert boot.estimate[2] == cbpp_fit.objective


def test_refit_failure_is_recorded_and_the_run_goes_on(cbpp_fit, monkeypatch):
    real = type(cbpp_fit.model).refit

    def refit(self, Y, **kw):
        if Y.shape[0] > 1 or Y[0].tobytes() == target:
            raise FloatingPointError("PIRLS diverged")
        return real(self, Y, **kw)

    target = mb.simulate(cbpp_fit, 6, seed=2)[:, 4].tobytes()
    monkeypatch.setattr(type(cbpp_fit.model), "refit", refit)
    with pytest.warns(RuntimeWarning, match="1 of 6 bootstrap replicates failed"):
        boot = mb.bootMer(cbpp_fit, B=6, seed=2)
    assert boot.failures[["replicate", "stage"]].values.tolist() == [[4, "refit"]]
    assert np.isnan(boot.estimates[4]).all()
    assert np.isfinite(np.delete(boot.estimates, 4, axis=0)).all()


# --------------------------------------------------------------------------- BootResult
def test_confint_rows_on_the_reported_scale(cbpp_fit, boot40):
    ci = boot40.confint()
    assert list(ci.index) == ["sd_(Intercept)|herd", "(Intercept)", "period2", "period3", "period4"]
    # sigma is 1: the herd SD is theta itself
    j = boot40.names.index("herd.(Intercept)")
    np.testing.assert_array_equal(boot40.reported()["sd_(Intercept)|herd"], boot40.estimates[:, j])
    assert boot40.reported_estimate()["sd_(Intercept)|herd"] == cbpp_fit.theta[0]
    assert "sigma" not in boot40.tbl.columns and "sigma" not in boot40.names
    for method in ("perc", "shortest", "basic", "norm"):
        bounds = boot40.confint(method, theta=True)
        assert list(bounds.index)[-1] == "theta_herd.(Intercept)"
        assert np.all(bounds["lower"] < bounds["upper"])
        assert boot40.ci(method).shape == (5, 2)
    with pytest.raises(ValueError, match="bca"):
        boot40.confint("bca")
    assert boot40.meta["family"] == "binomial" and boot40.meta["nAGQ"] == 1


def test_save_load_and_concat(cbpp_fit, boot40, tmp_path):
    path = tmp_path / "boot.parquet"
    boot40.save(path)
    back = mb.BootResult.load(path)
    assert back == boot40
    pd.testing.assert_frame_equal(back.confint(), boot40.confint())
    more = mb.bootMer(cbpp_fit, B=5, seed=12)
    both = mb.concat([boot40, more])
    assert both.B == 45 and both.confint().shape == (5, 2)
    with pytest.raises(ValueError, match="share replicate"):
        mb.concat([boot40, boot40])
