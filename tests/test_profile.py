"""Profile-likelihood intervals against lme4's confint(method = "profile", oldNames = FALSE)."""

from __future__ import annotations

import json
from functools import cache

import numpy as np
import pandas as pd
import pytest
from scipy import special

import mixboot as mb
from conftest import SHARED, has_shared, load_data
from mixboot.profile import reported_parameters, zeta

pytestmark = pytest.mark.skipif(not has_shared(), reason="reference data (../shared) not found")

SLEEP = "Reaction ~ 1 + Days + (1 + Days|Subject)"
RTOL = 2e-3


def _cases() -> list[dict]:
    path = SHARED / "reference" / "lmertest_inference.json"
    if not path.is_file():
        return []
    with open(path) as fh:
        return [c for c in json.load(fh) if "profile_names" in c]


CASES = _cases()


@cache
def _fit(dataset: str, formula: str, REML: bool):
    return mb.fit(formula, data=load_data(dataset), REML=REML)


@cache
def _profile(dataset: str, formula: str, REML: bool) -> pd.DataFrame:
    return _fit(dataset, formula, REML).conf_int(method="profile")


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_profile_matches_lme4(case):
    ci = _profile(case["dataset"], case["formula"], case["REML"])
    assert list(ci.index) == case["profile_names"]
    assert list(ci.columns) == ["lower", "upper"]
    for col, key in (("lower", "profile_lower"), ("upper", "profile_upper")):
        ref = np.asarray(case[key], dtype=float)
        got = ci[col].to_numpy()
        near0 = np.abs(ref) < 1.0
        err = np.abs(got - ref)
        assert np.all(err[near0] <= RTOL), (col, got, ref)
        assert np.all(err[~near0] <= RTOL * np.abs(ref[~near0])), (col, got, ref)


def test_reml_and_ml_give_the_same_profile():
    data = "sleepstudy"
    reml = _profile(data, SLEEP, True)
    ml = _profile(data, SLEEP, False)
    pd.testing.assert_index_equal(reml.index, ml.index)
    np.testing.assert_allclose(reml.to_numpy(), ml.to_numpy(), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "dataset,formula", [("sleepstudy", SLEEP), ("pastes", "strength ~ 1 + (1|batch/cask)")]
)
def test_zeta_at_the_bounds_is_the_quantile(dataset, formula):
    r = _fit(dataset, formula, True)
    ci = _profile(dataset, formula, True)
    q = special.ndtri(0.975)
    for name, (lo, hi) in ci.iterrows():
        if name.startswith("sd_") and lo == 0:
            # the profile never gets to -q: zeta at 0 stays above it
            assert zeta(r, name, 0.0) > -q
        else:
            assert zeta(r, name, lo) == pytest.approx(-q, abs=1e-4)
        assert zeta(r, name, hi) == pytest.approx(q, abs=1e-4)


def test_pastes_batch_sd_lower_bound_is_zero():
    ci = _profile("pastes", "strength ~ 1 + (1|batch/cask)", True)
    assert ci.loc["sd_(Intercept)|batch", "lower"] == 0.0


def test_names_follow_lme4():
    r = _fit("sleepstudy", SLEEP, True)
    assert [p.name for p in reported_parameters(r.spec)] == [
        "sd_(Intercept)|Subject",
        "cor_Days.(Intercept)|Subject",
        "sd_Days|Subject",
        "sigma",
        "(Intercept)",
        "Days",
    ]


def test_profile_which_and_level():
    r = _fit("dyestuff", "Yield ~ 1 + (1|Batch)", True)
    full = _profile("dyestuff", "Yield ~ 1 + (1|Batch)", True)
    one = r.conf_int(method="profile", which="sigma")
    assert list(one.index) == ["sigma"]
    np.testing.assert_allclose(one.to_numpy(), full.loc[["sigma"]].to_numpy(), rtol=1e-6)
    narrow = r.conf_int(0.8, method="profile", which=["(Intercept)"])
    assert (
        full.loc["(Intercept)", "lower"]
        < narrow.iloc[0, 0]
        < narrow.iloc[0, 1]
        < full.loc["(Intercept)", "upper"]
    )
    with pytest.raises(ValueError):
        r.conf_int(method="profile", which="nope")
    with pytest.raises(ValueError):
        r.conf_int(method="nope")


def test_default_conf_int_is_unchanged():
    r = _fit("sleepstudy", SLEEP, True)
    ci = r.conf_int()
    assert list(ci.index) == ["(Intercept)", "Days"]
    pd.testing.assert_frame_equal(ci, r.conf_int(method="wald"))
    table = r.coef_table()
    from scipy import stats

    q = stats.t.ppf(0.975, table["df"].to_numpy())
    np.testing.assert_allclose(ci["upper"], r.fe_params + q * table["Std. Error"])


def test_boot_conf_int_has_the_profile_names():
    r = _fit("dyestuff", "Yield ~ 1 + (1|Batch)", True)
    boot = r.conf_int(method="boot", B=20, seed=1)
    prof = _profile("dyestuff", "Yield ~ 1 + (1|Batch)", True)
    assert list(boot.index) == list(prof.index)
    assert list(boot.columns) == ["lower", "upper"]
