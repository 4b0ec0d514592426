"""parse_formula: the fixed part, bar terms and their expansion, and malformed formulas."""

from __future__ import annotations

import doctest

import numpy as np
import pandas as pd
import pytest

import mixboot.formula
from mixboot.formula import FormulaError, parse_formula
from mixboot.spec import build_spec


def bars(parts):
    return [(t.expr, t.group, t.label) for t in parts.random]


def test_docstring_examples_run():
    result = doctest.testmod(mixboot.formula)
    assert result.attempted > 0
    assert result.failed == 0


# -- fixed part -------------------------------------------------------------------


def test_response_fixed_and_one_bar():
    parts = parse_formula("Reaction ~ 1 + Days + (1 + Days | Subject)")
    assert parts.response == "Reaction"
    assert parts.fixed == "1 + Days"
    assert bars(parts) == [("1 + Days", ("Subject",), "Subject")]
    assert parts.random[0].source == "(1 + Days | Subject)"


def test_only_random_terms_leaves_an_intercept():
    parts = parse_formula("y ~ (1|g)")
    assert parts.fixed == "1"
    assert bars(parts) == [("1", ("g",), "g")]


@pytest.fixture(scope="module")
def frame():
    rng = np.random.default_rng(0)
    n = 40
    return pd.DataFrame(
        {
            "y": rng.normal(size=n),
            "x": rng.normal(size=n),
            "a": np.tile(["p", "q"], n // 2),
            "b": np.repeat(["u", "v"], n // 2),
            "g": np.repeat(np.arange(8), n // 8),
        }
    )


@pytest.mark.parametrize(
    "formula, fixed, names",
    [
        ("y ~ x + (1|g)", "x", ("(Intercept)", "x")),
        ("y ~ 0 + x + (1|g)", "0 + x", ("x",)),
        ("y ~ x - 1 + (1|g)", "x - 1", ("x",)),
        ("y ~ -1 + x + (1|g)", "1 - 1 + x", ("x",)),
        ("y ~ a*b + (1|g)", "a*b", ("(Intercept)", "aq", "bv", "aq:bv")),
        ("y ~ x + a:b + (1|g)", "x + a:b", None),
    ],
    ids=["implicit-intercept", "zero-plus", "minus-one", "leading-minus-one", "star", "colon"],
)
def test_fixed_part(frame, formula, fixed, names):
    parts = parse_formula(formula)
    assert parts.fixed == fixed
    assert bars(parts) == [("1", ("g",), "g")]
    spec = build_spec(formula, frame)
    if names is not None:
        assert spec.fe_names == names


def test_colon_is_an_interaction_only(frame):
    spec = build_spec("y ~ 1 + x:a + (1|g)", frame)
    assert spec.fe_names == ("(Intercept)", "x:ap", "x:aq")
    assert "x" not in spec.fe_names


def test_random_terms_do_not_leak_into_the_fixed_part():
    parts = parse_formula("y ~ x + (1 + x|g) + z + (1|h)")
    assert parts.fixed == "x + z"
    assert [t.group for t in parts.random] == [("g",), ("h",)]


# -- double bar -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "formula, exprs",
    [
        ("y ~ x + (x || g)", ["1", "0 + x"]),
        ("y ~ x + (1 + x || g)", ["1", "0 + x"]),
        ("y ~ x + (1 + x + z || g)", ["1", "0 + x", "0 + z"]),
        ("y ~ x + (0 + x + z || g)", ["0 + x", "0 + z"]),
        ("y ~ x + (x - 1 || g)", ["0 + x"]),
    ],
)
def test_double_bar_splits_into_uncorrelated_blocks(formula, exprs):
    parts = parse_formula(formula)
    assert [t.expr for t in parts.random] == exprs
    assert all(t.group == ("g",) and t.label == "g" for t in parts.random)


def test_double_bar_gives_diagonal_covariance():
    i = np.arange(60)
    df = pd.DataFrame({"y": np.sin(i), "x": i % 5, "g": i % 6})
    spec = build_spec("y ~ x + (x || g)", df)
    assert [t.colnames for t in spec.terms] == [("(Intercept)",), ("x",)]
    assert spec.n_theta == 2


def test_double_bar_with_nothing_left_is_an_error():
    with pytest.raises(FormulaError, match=r"\(0 \|\| g\)"):
        parse_formula("y ~ x + (0 || g)")


# -- grouping side ----------------------------------------------------------------------


def test_nesting_expands_to_outer_and_interaction():
    parts = parse_formula("strength ~ 1 + (1|batch/cask)")
    assert bars(parts) == [("1", ("batch",), "batch"), ("1", ("batch", "cask"), "cask:batch")]


def test_three_level_nesting_labels_innermost_first():
    parts = parse_formula("y ~ (1|a/b/c)")
    assert [t.label for t in parts.random] == ["a", "b:a", "c:b:a"]
    assert parts.random[-1].group == ("a", "b", "c")


def test_interaction_grouping():
    parts = parse_formula("angle ~ recipe + (1|recipe:replicate)")
    assert bars(parts) == [("1", ("recipe", "replicate"), "recipe:replicate")]


def test_vector_term_on_nested_grouping_repeats_the_expression():
    parts = parse_formula("y ~ x + (1 + x|a/b)")
    assert bars(parts) == [("1 + x", ("a",), "a"), ("1 + x", ("a", "b"), "b:a")]


def test_several_terms_on_one_factor():
    parts = parse_formula("y ~ x + (1|g) + (0 + x|g) + (1|h)")
    assert bars(parts) == [("1", ("g",), "g"), ("0 + x", ("g",), "g"), ("1", ("h",), "h")]


def test_backquoted_grouping_name():
    parts = parse_formula("y ~ x + (1 | `my group`)")
    assert parts.random[0].group == ("my group",)


# -- errors ---------------------------------------------------------------------------------


def test_no_random_term():
    with pytest.raises(FormulaError, match=r"'y ~ x \+ z' has no random-effect term"):
        parse_formula("y ~ x + z")


@pytest.mark.parametrize(
    "formula, where",
    [
        ("y ~ x + (1|g", r"unbalanced '\(' .*\(1\|g"),
        ("y ~ x + (1|g))", r"unbalanced '\)' .*\(1\|g\)\)"),
        ("y ~ x + ((1|g)", r"unbalanced '\(' .*\(\(1\|g\)"),
    ],
)
def test_unbalanced_parentheses(formula, where):
    with pytest.raises(FormulaError, match=where):
        parse_formula(formula)


def test_two_tildes():
    with pytest.raises(FormulaError, match=r"'y ~ x ~ z \+ \(1\|g\)' must have exactly one '~'"):
        parse_formula("y ~ x ~ z + (1|g)")


def test_no_tilde():
    with pytest.raises(FormulaError, match=r"'y \+ \(1\|g\)' must have exactly one '~'"):
        parse_formula("y + (1|g)")


@pytest.mark.parametrize(
    "formula, term",
    [
        ("y ~ x + (1|)", r"\(1\|\)"),
        ("y ~ x + (1| )", r"\(1\| \)"),
    ],
)
def test_empty_grouping(formula, term):
    with pytest.raises(FormulaError, match=term + "' has no grouping factor"):
        parse_formula(formula)


def test_nothing_left_of_the_bar():
    with pytest.raises(FormulaError, match=r"\( \| g\)' has nothing left of the bar"):
        parse_formula("y ~ x + ( | g)")


@pytest.mark.parametrize(
    "formula, term",
    [
        ("y ~ x + 1|g", r"'1\|g' must be in parentheses"),
        ("y ~ x | g", r"'x \| g' must be in parentheses"),
    ],
)
def test_bar_outside_parentheses(formula, term):
    with pytest.raises(FormulaError, match=term):
        parse_formula(formula)


def test_bad_grouping_expression():
    with pytest.raises(FormulaError, match=r"grouping side of '\(1\|a \+ b\)'.*'a \+ b'"):
        parse_formula("y ~ x + (1|a + b)")


def test_grouping_must_be_a_name():
    with pytest.raises(FormulaError, match=r"grouping factor 'log\(g\)'"):
        parse_formula("y ~ x + (1|log(g))")


def test_subtracting_a_random_term():
    with pytest.raises(FormulaError, match=r"cannot subtract a random-effect term: '\(1\|h\)'"):
        parse_formula("y ~ x + (1|g) - (1|h)")


def test_missing_response_and_missing_right_side():
    with pytest.raises(FormulaError, match="no response"):
        parse_formula(" ~ x + (1|g)")
    with pytest.raises(FormulaError, match="nothing right of"):
        parse_formula("y ~ ")


def test_empty_term():
    with pytest.raises(FormulaError, match=r"empty term in formula 'y ~ x \+ \+ \(1\|g\)'"):
        parse_formula("y ~ x + + (1|g)")


def test_formula_must_be_a_string():
    with pytest.raises(TypeError, match="formula must be a string"):
        parse_formula(None)


def test_formula_error_is_a_value_error():
    assert issubclass(FormulaError, ValueError)
