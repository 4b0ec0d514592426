"""predict and predict_interval: lme4's predict.merMod, and bootstrap intervals of predictions."""

from __future__ import annotations

import importlib
import json

import numpy as np
import pandas as pd
import pytest

import mixboot as mb
from conftest import has_shared, load_data, shared_dir
from mixboot.predict import predict, predict_interval
from mixboot.result import build_result

needs_shared = pytest.mark.skipif(not has_shared(), reason="../shared reference data not found")
SLEEP = "Reaction ~ 1 + Days + (1 + Days|Subject)"
PENICILLIN = "diameter ~ 1 + (1|plate) + (1|sample)"


def _cases() -> list[dict]:
    if not has_shared():
        return []
    with open(shared_dir() / "reference" / "lmertest_inference.json") as fh:
        return json.load(fh)


def _rel(a, b) -> float:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return float(np.max(np.abs(a - b) / np.abs(b)))


_FITS: dict = {}


def _fit(dataset: str, formula: str, REML: bool = True):
    key = (dataset, formula, REML)
    if key not in _FITS:
        _FITS[key] = (mb.fit(formula, load_data(dataset), REML=REML), load_data(dataset))
    return _FITS[key]


# --------------------------------------------------------------------------- reference
# lmerTest's ML fit of sleepstudy stopped 2.6e-8 short of the optimum that mixboot (and
# lme4's own reference fit) reaches, which moves its conditional predictions by 1.4e-6
# relative.  At the theta where it stopped (recovered by least squares from its
# predictions; its standard errors then agree to 1e-14 as well) predict agrees to 1e-12:
# see test_reference_at_the_references_theta.
_TOL = {"sleepstudy_ml": 2e-6}
_LMERTEST_ML_THETA = np.array([0.929190605278224, 0.018165754720403875, 0.2226432056126057])


@needs_shared
@pytest.mark.parametrize("case", _cases(), ids=lambda c: c["id"])
def test_reference_predictions(case):
    m, data = _fit(case["dataset"], case["formula"], case["REML"])
    new = data.iloc[case["predict_rows"]]
    cond = predict(m, new)
    pop = predict(m, new, re_form="~0")
    assert isinstance(cond, pd.Series) and cond.index.equals(new.index)
    assert _rel(cond, case["predict_conditional"]) < _TOL.get(case["id"], 1e-6)
    assert _rel(pop, case["predict_population"]) < 1e-6
    # the other spellings of "no random effects"
    for re_form in ("NA", "~ 0", np.nan, pd.NA):
        np.testing.assert_array_equal(predict(m, new, re_form=re_form), pop)
    # newdata=None: the fitted values; population level X beta
    np.testing.assert_array_equal(predict(m), m.fittedvalues)
    np.testing.assert_allclose(predict(m, re_form="~0"), m.spec.X @ m.beta, rtol=1e-14)
    np.testing.assert_allclose(predict(m, data), m.fittedvalues, rtol=1e-12)
    np.testing.assert_array_equal(m.predict(new), cond)


@needs_shared
def test_reference_at_the_references_theta():
    case = next(c for c in _cases() if c["id"] == "sleepstudy_ml")
    m, data = _fit("sleepstudy", case["formula"], REML=False)
    at_ref = build_result(m.model, _LMERTEST_ML_THETA, m.optsum)
    assert at_ref.objective - m.objective < 1e-7  # the optimum is this flat
    new = data.iloc[case["predict_rows"]]
    assert _rel(predict(at_ref, new), case["predict_conditional"]) < 1e-9
    assert _rel(at_ref.bse, case["se"]) < 1e-9


# --------------------------------------------------------------------------- re_form
@needs_shared
def test_re_form_subset_penicillin_by_hand():
    m, data = _fit("penicillin", PENICILLIN)
    new = data.iloc[[0, 7, 30, 77, 143]]
    b_plate = m.ranef["plate"]["(Intercept)"]
    b_sample = m.ranef["sample"]["(Intercept)"]
    xb = m.beta[0]
    np.testing.assert_allclose(
        predict(m, new, re_form="~(1|plate)"), xb + b_plate.loc[new["plate"]].to_numpy(), rtol=1e-13
    )
    np.testing.assert_allclose(
        predict(m, new, re_form="~ (1 | sample)"),
        xb + b_sample.loc[new["sample"]].to_numpy(),
        rtol=1e-13,
    )
    both = predict(m, new, re_form="~(1|plate) + (1|sample)")
    np.testing.assert_allclose(both, predict(m, new), rtol=1e-14)
    # on the fitted data (newdata=None) as well
    np.testing.assert_allclose(
        predict(m, re_form="~(1|sample)"), xb + b_sample.loc[data["sample"]].to_numpy(), rtol=1e-13
    )


@needs_shared
def test_re_form_nested_and_errors():
    m, data = _fit("pastes", "strength ~ 1 + (1|batch/cask)")
    new = data.iloc[[0, 10, 40]]
    np.testing.assert_allclose(
        predict(m, new, re_form="~(1|batch/cask)"), predict(m, new), rtol=1e-14
    )
    b = m.ranef["batch"]["(Intercept)"]
    np.testing.assert_allclose(
        predict(m, new, re_form="~(1|batch)"),
        m.beta[0] + b.loc[new["batch"]].to_numpy(),
        rtol=1e-13,
    )
    with pytest.raises(ValueError, match="not a random term"):
        predict(m, new, re_form="~(1|sample)")
    with pytest.raises(ValueError, match="one-sided"):
        predict(m, new, re_form="(1|batch)")
    with pytest.raises(TypeError, match="re_form"):
        predict(m, new, re_form=3)


# --------------------------------------------------------------------------- new data
@needs_shared
def test_new_levels_error_and_allowed():
    m, data = _fit("sleepstudy", SLEEP)
    new = pd.DataFrame({"Days": [0.0, 3.0, 5.0], "Subject": [308, 999, 1000]})
    with pytest.raises(ValueError, match=r"Subject.*999.*1000.*allow_new_levels"):
        predict(m, new)
    got = predict(m, new, allow_new_levels=True)
    pop = predict(m, new, re_form="~0")
    np.testing.assert_allclose(got.iloc[1:], pop.iloc[1:], rtol=1e-14)
    known = data[(data.Subject == 308) & (data.Days == 0)]
    np.testing.assert_allclose(got.iloc[0], predict(m, known).iloc[0], rtol=1e-13)
    # population level needs no grouping column, and never checks levels
    np.testing.assert_allclose(predict(m, new[["Days"]], re_form="~0"), pop, rtol=0)


@needs_shared
def test_missing_values_give_nan():
    m, data = _fit("sleepstudy", SLEEP)
    new = pd.DataFrame(
        {"Days": [0.0, np.nan, 5.0], "Subject": [308, 309, np.nan]}, index=[10, 20, 30]
    )
    pop = predict(m, new, re_form="~0")
    assert pop.index.tolist() == [10, 20, 30]
    assert np.isnan(pop[20]) and np.isfinite(pop[[10, 30]]).all()
    # a missing grouping level is a new level, as in lme4
    with pytest.raises(ValueError, match="Subject"):
        predict(m, new)
    cond = predict(m, new, allow_new_levels=True)
    assert np.isnan(cond[20])
    assert cond[30] == pytest.approx(pop[30], rel=1e-14)
    assert cond[10] == pytest.approx(predict(m, data.iloc[[0]]).iloc[0], rel=1e-13)


@needs_shared
def test_bad_arguments():
    m, data = _fit("sleepstudy", SLEEP)
    with pytest.raises(TypeError, match="newdata"):
        predict(m, data.to_numpy())
    with pytest.raises(KeyError, match="Days"):
        predict(m, data[["Subject"]])
    with pytest.raises(TypeError, match="allow_new_levels"):
        predict(m, data, allow_new_levels="yes")
    with pytest.raises(ValueError, match="kind"):
        predict_interval(m, data.iloc[:2], B=5, kind="credible")
    with pytest.raises(ValueError, match="level"):
        predict_interval(m, data.iloc[:2], B=5, level=95)
    with pytest.raises(ValueError, match="B"):
        predict_interval(m, data.iloc[:2], B=0)


# --------------------------------------------------------------------------- intervals
@needs_shared
def test_population_interval_sleepstudy():
    m, _ = _fit("sleepstudy", SLEEP)
    new = pd.DataFrame({"Days": np.arange(10.0)}, index=list("abcdefghij"))
    ci = predict_interval(m, new, B=300, seed=7, re_form="~0")
    assert list(ci.columns) == ["fit", "lower", "upper"] and ci.index.equals(new.index)
    np.testing.assert_array_equal(ci["fit"], predict(m, new, re_form="~0"))
    assert (ci["lower"] <= ci["fit"]).all() and (ci["fit"] <= ci["upper"]).all()
    assert ci.loc["a", "lower"] < m.beta[0] < ci.loc["a", "upper"]
    # near the Wald interval of the intercept (the mean at Days=0)
    wald = 2 * 1.959964 * m.bse.iloc[0]
    assert 0.7 * wald < ci.loc["a", "upper"] - ci.loc["a", "lower"] < 1.3 * wald
    assert ci.attrs["B"] == 300 and ci.attrs["failed"] == 0
    pi = predict_interval(m, new, B=300, seed=7, re_form="~0", kind="prediction")
    np.testing.assert_array_equal(pi["fit"], ci["fit"])
    assert ((pi["upper"] - pi["lower"]) > (ci["upper"] - ci["lower"])).all()
    assert (pi["lower"] <= pi["fit"]).all() and (pi["fit"] <= pi["upper"]).all()
    # a new observation of a new subject: spread near sqrt(var(b0) + sigma^2) at Days=0
    sd0 = np.sqrt(m.varcorr["vcov"].iloc[0] + m.sigma**2)
    width = pi.loc["a", "upper"] - pi.loc["a", "lower"]
    assert 0.7 * 2 * 1.96 * sd0 < width < 1.3 * 2 * 1.96 * sd0


@needs_shared
def test_conditional_interval_and_reproducibility():
    m, data = _fit("sleepstudy", SLEEP)
    new = data.iloc[[0, 45, 99, 179]]
    ci = predict_interval(m, new, B=150, seed=3)
    assert ci.shape == (4, 3) and ci.index.equals(new.index)
    np.testing.assert_array_equal(ci["fit"], predict(m, new))
    assert (ci["lower"] < ci["upper"]).all()
    again = predict_interval(m, new, B=150, seed=3)
    pd.testing.assert_frame_equal(ci, again)
    other = predict_interval(m, new, B=150, seed=4)
    assert not np.array_equal(ci["lower"], other["lower"])
    pi = predict_interval(m, new, B=150, seed=3, kind="prediction")
    assert ((pi["upper"] - pi["lower"]) > (ci["upper"] - ci["lower"])).all()
    assert (pi["lower"] <= pi["fit"]).all() and (pi["fit"] <= pi["upper"]).all()


@needs_shared
def test_interval_newdata_none_and_new_levels():
    m, data = _fit("dyestuff", "Yield ~ 1 + (1|Batch)")
    ci = predict_interval(m, B=60, seed=1)
    assert ci.shape == (len(data), 3)
    np.testing.assert_array_equal(ci["fit"], m.fittedvalues)
    new = pd.DataFrame({"Batch": ["A", "Z"]})
    with pytest.raises(ValueError, match="Batch"):
        predict_interval(m, new, B=10, seed=1)
    got = predict_interval(m, new, B=60, seed=1, allow_new_levels=True)
    assert got.loc[1, "fit"] == pytest.approx(m.beta[0], rel=1e-14)
    assert np.isfinite(got.to_numpy()).all()
    # a new observation of a new batch carries the batch variance as well
    pi = predict_interval(m, new, B=200, seed=1, allow_new_levels=True, kind="prediction")
    width = pi["upper"] - pi["lower"]
    assert width[1] > width[0]
    sd_new = np.sqrt(m.varcorr["vcov"].iloc[0] + m.sigma**2)
    assert 0.6 * 2 * 1.96 * sd_new < width[1] < 1.4 * 2 * 1.96 * sd_new


@needs_shared
def test_interval_subset_re_form_penicillin():
    m, data = _fit("penicillin", PENICILLIN)
    new = data.iloc[[0, 50]]
    ci = predict_interval(m, new, B=60, seed=2, re_form="~(1|plate)")
    np.testing.assert_array_equal(ci["fit"], predict(m, new, re_form="~(1|plate)"))
    pi = predict_interval(m, new, B=60, seed=2, re_form="~(1|plate)", kind="prediction")
    # the prediction interval adds a new sample's effect and the residual
    assert ((pi["upper"] - pi["lower"]) > (ci["upper"] - ci["lower"])).all()


@needs_shared
def test_interval_missing_rows_are_nan():
    m, _ = _fit("sleepstudy", SLEEP)
    new = pd.DataFrame({"Days": [1.0, np.nan]})
    ci = predict_interval(m, new, B=40, seed=5, re_form="~0")
    assert np.isfinite(ci.iloc[0]).all() and ci.iloc[1].isna().all()


@needs_shared
def test_replicates_independent_of_batch_mates():
    from mixboot import runner
    from mixboot.predict import _design, _interval_chunk

    m, data = _fit("sleepstudy", SLEEP)
    new = data.iloc[[0, 50, 100]]
    design = _design(m, new, (0,), False)
    _, children = runner.seed_streams(9, 12)
    payload = (m, design, [], "prediction", True, None)
    whole = _interval_chunk(payload, np.arange(12), children)["pred"]
    pieces = np.vstack(
        [
            _interval_chunk(payload, np.arange(i, i + 4), children[i : i + 4])["pred"]
            for i in range(0, 12, 4)
        ]
    )
    np.testing.assert_array_equal(whole, pieces)
    # the method on the fit is the same function
    np.testing.assert_array_equal(
        m.predict_interval(new, B=20, seed=1)["lower"],
        predict_interval(m, new, B=20, seed=1)["lower"],
    )


@needs_shared
def test_failed_replicates_are_left_out(monkeypatch):
    P = importlib.import_module("mixboot.predict")  # the module: mb.predict is the function
    m, _ = _fit("sleepstudy", SLEEP)
    new = pd.DataFrame({"Days": [0.0, 4.0]})
    real = P.refit_isolated

    def first_fails(model, Y, *, start, tol, fail):
        fail(0, RuntimeError("boom"))
        return [
            (
                idx[idx != 0],
                type(rb)(**{f: getattr(rb, f)[idx != 0] for f in rb.__dataclass_fields__}),
            )
            for idx, rb in real(model, Y, start=start, tol=tol, fail=fail)
        ]

    monkeypatch.setattr(P, "refit_isolated", first_fails)
    with pytest.warns(RuntimeWarning, match="failed"):
        ci = predict_interval(m, new, B=30, seed=1, re_form="~0")
    assert ci.attrs["failed"] == 1
    assert ci.attrs["failures"][0][:2] == (0, "refit")
    assert np.isfinite(ci.to_numpy()).all()


def test_offset_goes_back_into_fitted_values_predictions_and_simulations():
    """offset(10 * Days) fits Days' slope 10 lower; everything on the data's scale agrees."""
    data = mb.datasets.load("reaction")
    with_offset = mb.fit("Reaction ~ Days + offset(10 * Days) + (Days | Subject)", data)
    plain = mb.fit("Reaction ~ Days + (Days | Subject)", data)
    assert with_offset.fe_params["Days"] == pytest.approx(plain.fe_params["Days"] - 10, abs=1e-5)
    np.testing.assert_allclose(with_offset.fittedvalues, plain.fittedvalues, rtol=1e-8)
    np.testing.assert_allclose(with_offset.resid, plain.resid, atol=1e-4)
    for re_form in (None, "~0"):
        np.testing.assert_allclose(
            with_offset.predict(data, re_form=re_form),
            plain.predict(data, re_form=re_form),
            rtol=1e-8,
        )
    flat = mb.simulate(with_offset, 1, seed=1, sigma=1e-9, theta=np.zeros(3))[:, 0]
    np.testing.assert_allclose(flat, plain.predict(data, re_form="~0"), rtol=1e-8)
    ci = mb.predict_interval(with_offset, data.head(4), B=60, seed=2, re_form="~0")
    assert np.all((ci["lower"] < ci["fit"]) & (ci["fit"] < ci["upper"]))
