"""Bad input is refused at the door with an error that names the column, term or argument."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import mixboot as mb
from conftest import load_data
from mixboot.spec import build_spec

FORMULA = "Reaction ~ Days + (1|Subject)"


@pytest.fixture
def sleep():
    return load_data("sleepstudy")


def assert_same_fit(a, b):
    assert list(a.fe_params.index) == list(b.fe_params.index)
    np.testing.assert_allclose(a.theta, b.theta, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(a.beta, b.beta, rtol=1e-10)
    assert a.sigma == pytest.approx(b.sigma, rel=1e-10)
    assert a.objective == pytest.approx(b.objective, rel=1e-12)


# -- columns ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "formula, name",
    [
        ("Reaction ~ Dayz + (1|Subject)", "Dayz"),
        ("Reaktion ~ Days + (1|Subject)", "Reaktion"),
        ("Reaction ~ Days + (1|Subjekt)", "Subjekt"),
        ("Reaction ~ Days + (1 + Dose|Subject)", "Dose"),
        ("Reaction ~ Days + (1|Subject:Site)", "Site"),
    ],
)
def test_missing_column_is_a_key_error_naming_it(sleep, formula, name):
    with pytest.raises(KeyError, match=name):
        mb.fit(formula, sleep)


def test_non_numeric_response(sleep):
    sleep["label"] = np.where(sleep["Reaction"] > 300, "slow", "fast")
    with pytest.raises(TypeError, match="response 'label' must be numeric"):
        mb.fit("label ~ Days + (1|Subject)", sleep)


def test_non_finite_predictor(sleep):
    sleep["x"] = sleep["Days"].astype(float)
    sleep.loc[5, "x"] = np.inf
    with pytest.raises(ValueError, match="non-finite"):
        mb.fit("Reaction ~ x + (1|Subject)", sleep)


@pytest.mark.parametrize("value", [np.inf, -np.inf])
def test_non_finite_response_names_it(sleep, value):
    sleep.loc[[5, 9], "Reaction"] = value
    with pytest.raises(
        ValueError,
        match=r"response 'Reaction' has non-finite values \(inf\) "
        r"in 2 row",
    ):
        mb.fit(FORMULA, sleep)


def test_inf_response_in_a_dropped_row_is_no_error(sleep):
    # The row is dropped for its missing predictor before the response is checked.
    sleep.loc[5, "Reaction"] = np.inf
    sleep.loc[5, "Days"] = np.nan
    with pytest.warns(UserWarning, match="dropped 1 of 180"):
        assert mb.fit(FORMULA, sleep).nobs == 179


@pytest.mark.parametrize("value, shown", [(3, "3.0"), (-2.5, "-2.5"), (True, "1.0"), (0, "0.0")])
def test_constant_response(sleep, value, shown):
    sleep["y"] = value
    with pytest.raises(
        ValueError,
        match=rf"response 'y' is constant \(every value is {shown}\): "
        "a mixed model cannot be fitted",
    ):
        mb.fit("y ~ Days + (1|Subject)", sleep)


def test_response_constant_after_dropping_missing_rows(sleep):
    sleep["y"] = 3.0
    sleep.loc[[0, 1], "y"] = [1.0, np.nan]
    sleep.loc[0, "Days"] = np.nan  # the only other value goes with its row
    with pytest.warns(UserWarning, match="dropped 2 of 180"):
        with pytest.raises(ValueError, match=r"response 'y' is constant \(every value is 3.0\)"):
            mb.fit("y ~ Days + (1|Subject)", sleep)


# -- missing values -------------------------------------------------------------------------


def test_rows_with_missing_values_are_dropped_with_a_count(sleep):
    holed = sleep.copy()
    holed.loc[[3, 10, 50], "Days"] = np.nan
    holed.loc[7, "Reaction"] = np.nan
    holed.loc[10, "Reaction"] = np.nan  # same row as a missing Days: counted once
    with pytest.warns(UserWarning, match=r"dropped 4 of 180 rows") as record:
        r = mb.fit(FORMULA, holed)
    message = str(record[0].message)
    assert "Days" in message and "Reaction" in message
    assert r.nobs == 176
    clean = sleep.drop(index=[3, 7, 10, 50]).reset_index(drop=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        want = mb.fit(FORMULA, clean)
    assert_same_fit(r, want)


def test_missing_group_drops_the_row(sleep):
    holed = sleep.copy()
    holed["Subject"] = holed["Subject"].astype(object)
    holed.loc[0, "Subject"] = None
    with pytest.warns(UserWarning, match=r"dropped 1 of 180 rows.*Subject"):
        r = mb.fit(FORMULA, holed)
    assert r.nobs == 179


def test_missing_values_in_unused_columns_are_ignored(sleep):
    sleep["unused"] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = mb.fit(FORMULA, sleep)
    assert r.nobs == 180


def test_every_row_missing(sleep):
    sleep["Days"] = np.nan
    with pytest.warns(UserWarning, match="dropped 180 of 180"):
        with pytest.raises(ValueError, match="every row has a missing value"):
            mb.fit(FORMULA, sleep)


# -- grouping factors ------------------------------------------------------------------------


def test_as_many_levels_as_observations(sleep):
    sleep["obs"] = np.arange(len(sleep))
    with pytest.raises(
        ValueError, match=r"grouping factor 'obs' .* 180 levels for 180 observations"
    ):
        mb.fit("Reaction ~ Days + (1|obs)", sleep)


def test_single_level_grouping_factor(sleep):
    sleep["site"] = "only"
    with pytest.raises(ValueError, match=r"grouping factor 'site' .* has 1 level"):
        mb.fit("Reaction ~ Days + (1|site)", sleep)


def test_too_many_random_effects_for_the_data(sleep):
    sleep["pair"] = np.arange(len(sleep)) // 2
    with pytest.raises(ValueError, match=r"term '\(1 \+ Days\|pair\)' has 180 random effects"):
        mb.fit("Reaction ~ Days + (1 + Days|pair)", sleep)


# -- fixed effects ------------------------------------------------------------------------------


def test_rank_deficient_x_drops_the_aliased_column(sleep):
    sleep["x"] = np.random.default_rng(1).normal(size=len(sleep))
    sleep["x2"] = 2 * sleep["x"]
    with pytest.warns(mb.RankDeficiencyWarning, match=r"dropping 1 column\(s\): \['x2'\]"):
        r = mb.fit("Reaction ~ Days + x + x2 + (1|Subject)", sleep)
    assert list(r.fe_params.index) == ["(Intercept)", "Days", "x"]
    assert r.spec.dropped == ("x2",)
    assert np.all(np.isfinite(r.bse))
    want = mb.fit("Reaction ~ Days + x + (1|Subject)", sleep)
    assert_same_fit(r, want)
    assert "Dropped aliased columns: x2" in r.summary()


def test_rank_deficiency_keeps_the_earlier_column_whatever_the_scale(sleep):
    # The later column is dropped even when it is the shorter one.
    sleep["big"] = 1000.0 * sleep["Days"]
    with pytest.warns(mb.RankDeficiencyWarning, match=r"\['Days'\]"):
        spec = build_spec("Reaction ~ big + Days + (1|Subject)", sleep)
    assert spec.fe_names == ("(Intercept)", "big")


def test_factor_aliased_with_a_numeric_column(sleep):
    sleep["half"] = np.where(sleep["Days"] < 5, "early", "late")
    sleep["late"] = (sleep["Days"] >= 5).astype(float)
    with pytest.warns(mb.RankDeficiencyWarning, match=r"\['late'\]"):
        spec = build_spec("Reaction ~ half + late + (1|Subject)", sleep)
    assert spec.fe_names == ("(Intercept)", "halflate")


# -- arguments ----------------------------------------------------------------------------------


def test_empty_data(sleep):
    with pytest.raises(ValueError, match="data is empty"):
        mb.fit(FORMULA, sleep.iloc[:0])


def test_data_that_is_not_a_table():
    with pytest.raises(TypeError, match="data must be a pandas DataFrame"):
        mb.fit(FORMULA, 3.5)


@pytest.mark.parametrize(
    "formula, part",
    [
        ("Reaction ~ Days ** + (1|Subject)", r"Reaction ~ Days \*\*"),
        ("Reaction ~ Days + (1|Subject", r"Days \+ \(1\|Subject"),
        ("Reaction ~ Days", r"'Reaction ~ Days' has no random-effect term"),
    ],
)
def test_unparsable_formula(sleep, formula, part):
    with pytest.raises(mb.FormulaError, match=part):
        mb.fit(formula, sleep)


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_reml_must_be_boolean(sleep, value):
    with pytest.raises(TypeError, match="REML must be True or False"):
        mb.fit(FORMULA, sleep, REML=value)


def test_contrasts_for_an_absent_column(sleep):
    with pytest.raises(ValueError, match="contrasts names column 'recipe'"):
        mb.fit(FORMULA, sleep, contrasts={"recipe": "sum"})


def test_unknown_contrast_kind():
    with pytest.raises(ValueError, match=r"contrasts\['recipe'\] must be one of"):
        mb.fit(
            "angle ~ recipe + temp + (1|recipe:replicate)",
            load_data("cake"),
            contrasts={"recipe": "deviation"},
        )


def test_unknown_optimizer_setting(sleep):
    with pytest.raises(TypeError, match="maxevals"):
        mb.fit(FORMULA, sleep, optimizer={"maxevals": 3})


@pytest.mark.parametrize("groups", [[], [""], 3])
def test_bad_groups(sleep, groups):
    with pytest.raises(TypeError, match="groups must be a column name"):
        mb.fit("Reaction ~ Days", sleep, groups=groups)


def test_groups_naming_an_absent_column(sleep):
    with pytest.raises(KeyError, match="Subjekt"):
        mb.fit("Reaction ~ Days", sleep, groups="Subjekt")


@pytest.mark.parametrize(
    "start, match",
    [
        ([1.0, 0.0], r"start must have 3 theta values"),
        ([-1.0, 0.0, 1.0], r"start has negative values on the diagonal"),
    ],
)
def test_bad_start(sleep, start, match):
    with pytest.raises(ValueError, match=match):
        mb.fit("Reaction ~ Days + (1 + Days|Subject)", sleep, start=start)
