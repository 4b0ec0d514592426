"""Notebook display: each result's _repr_html_ holds its numbers in well-formed tables."""

import warnings
from html.parser import HTMLParser

import pandas as pd
import pytest

import mixboot as mb
from mixboot import _html

SLEEP = "Reaction ~ 1 + Days + (1 + Days | Subject)"
SLEEP_SMALL = "Reaction ~ 1 + Days + (1 | Subject)"


class TagCounter(HTMLParser):
    """Counts opening and closing tags and collects the text."""

    def __init__(self):
        super().__init__()
        self.opened: dict[str, int] = {}
        self.closed: dict[str, int] = {}
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.opened[tag] = self.opened.get(tag, 0) + 1

    def handle_endtag(self, tag):
        self.closed[tag] = self.closed.get(tag, 0) + 1

    def handle_data(self, data):
        self.text.append(data)


def parse(markup: str) -> TagCounter:
    """Parse and check that every table, row and cell is closed as often as opened."""
    parser = TagCounter()
    parser.feed(markup)
    parser.close()
    for tag in ("div", "table", "thead", "tbody", "tr", "th", "td", "p"):
        assert parser.opened.get(tag, 0) == parser.closed.get(tag, 0), tag
    return parser


def cells(markup: str) -> list[str]:
    return [t.strip() for t in parse(markup).text if t.strip()]


@pytest.fixture(scope="module")
def reaction():
    return mb.datasets.load("reaction")


@pytest.fixture(scope="module")
def sleep_ml(reaction):
    return mb.fit(SLEEP, data=reaction, REML=False)


@pytest.fixture(scope="module")
def sleep_small(reaction):
    return mb.fit(SLEEP_SMALL, data=reaction, REML=False)


def test_lmm_html_has_lmer_tables(sleep_ml):
    markup = sleep_ml._repr_html_()
    text = cells(markup)
    assert parse(markup).opened["table"] == 2
    assert "Linear mixed model fit by maximum likelihood [mixboot]" in text[0]
    for header in (
        "Groups",
        "Name",
        "Variance",
        "Std.Dev.",
        "Corr",
        "Estimate",
        "Std. Error",
        "df",
        "t value",
        "Pr(>|t|)",
    ):
        assert header in text
    table = sleep_ml.coef_table()
    for name in ("(Intercept)", "Days"):
        assert name in text
        assert f"{table.loc[name, 'Estimate']:.4f}" in text
        assert f"{table.loc[name, 'Std. Error']:.4f}" in text
        assert f"{table.loc[name, 'df']:.2f}" in text
    assert f"{sleep_ml.aic:.2f}" in markup and f"{sleep_ml.loglik:.2f}" in markup
    assert "Number of obs: 180, groups: Subject, 18" in text
    assert "&lt;2e-16" in markup  # the escaped p-value cell


def test_lmm_html_wald_and_reml(reaction):
    r = mb.fit(SLEEP_SMALL, data=reaction, ddf="wald")
    text = cells(r._repr_html_())
    assert "Linear mixed model fit by REML [mixboot]" in text[0]
    assert "z value" in text and "Pr(>|z|)" in text and "t value" not in text
    assert any(line.startswith("Fixed effects (Wald z tests)") for line in text)


def test_lmm_html_notes_singular_fit(reaction):
    d = reaction.copy()
    d["Reaction"] = 250 + 10 * d["Days"] + d.index.to_series().mod(7).to_numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = mb.fit("Reaction ~ Days + (1 | Subject)", data=d)
    assert r.is_singular
    assert "boundary (singular) fit: see is_singular" in cells(r._repr_html_())


def test_odd_names_are_escaped(reaction):
    d = reaction.assign(**{"a<b": reaction["Days"]})
    r = mb.fit("Reaction ~ 1 + Q('a<b') + (1 | Subject)", data=d)
    markup = r._repr_html_()
    assert "a<b" not in markup and "a&lt;b" in markup
    assert "Q('a<b')" in cells(markup)  # the parsed text is the name itself


def test_helpers_escape_cells_and_titles():
    markup = _html.rows_table(["<x>", "y"], [["a&b", "<script>"]])
    assert "<script>" not in markup and "&lt;script&gt;" in markup and "a&amp;b" in markup
    frame = pd.DataFrame({"<col>": [1.5, None]}, index=["<row>", "r2"])
    markup = _html.document("<T>", ["1 < 2"], [("<h>", _html.frame_table(frame))], ["<n>"])
    for raw in ("<T>", "<col>", "<row>", "<h>", "<n>", "1 < 2"):
        assert raw not in markup
    assert cells(markup) == ["<T>", "1 < 2", "<h>", "<col>", "<row>", "1.5", "r2", "<n>"]


def test_glmm_html_is_glmer_summary():
    d = mb.datasets.load("cbpp")
    r = mb.fit(
        "cbind(incidence, size - incidence) ~ period + (1 | herd)", data=d, family="binomial"
    )
    markup = r._repr_html_()
    text = cells(markup)
    assert parse(markup).opened["table"] == 3
    assert "Laplace approximation" in text[0]
    assert "Family: binomial ( logit )" in text
    for header in ("AIC", "BIC", "logLik", "deviance", "df.resid", "z value", "Pr(>|z|)"):
        assert header in text
    assert f"{r.aic:.1f}" in text
    for name, value in r.fe_params.items():
        assert name in text and f"{value:.4f}" in text


def test_boot_html_has_counts_and_intervals(sleep_ml):
    boot = mb.bootMer(sleep_ml, B=20, seed=5)
    markup = boot._repr_html_()
    text = cells(markup)
    assert "B = 20 replicates, seed 5" in text
    assert (
        f"failed: {boot.n_failed}, singular: {boot.n_singular}, "
        f"non-converged: {boot.n_nonconverged} (of 20 replicates)"
    ) in text
    for header in ("estimate", "std. error", "2.5 %", "97.5 %"):
        assert header in text
    ci = boot.confint()
    for name in ("sd_(Intercept)|Subject", "sigma", "Days"):
        assert name in text
        assert f"{ci.loc[name, 'lower']:.6g}" in text and f"{ci.loc[name, 'upper']:.6g}" in text


def test_lrt_and_pbtest_html(sleep_ml, sleep_small):
    table = mb.lrt(sleep_small, sleep_ml)
    text = cells(table._repr_html_())
    for header in ("npar", "AIC", "BIC", "logLik", "deviance", "Chisq", "Df", "Pr(>Chisq)"):
        assert header in text
    assert f"{table.table['Chisq'].iloc[1]:.6g}" in text
    assert "<NA>" not in text  # the first row's Df is blank

    pb = mb.pb_lrt(sleep_ml, sleep_small, B=10, seed=2)
    text = cells(pb._repr_html_())
    assert ["LRT", f"{pb.lrt:.6g}", str(pb.df), f"{pb.p_chisq:.6g}"] == text[
        text.index("LRT") : text.index("LRT") + 4
    ]
    assert f"{pb.p_boot:.6g}" in text
    assert f"bootstrap: {pb.n_valid} valid of B = 10 replicates" in text


@pytest.fixture(scope="module")
def two_arm():
    d = mb.design.nested(groups=20, per_group=4, between={"treatment": [0.0, 1.0]}, group="subject")
    return mb.model(
        "y ~ treatment + (1 | subject)",
        d,
        beta={"(Intercept)": 1.0, "treatment": 0.8},
        sigma=1.0,
        re={"subject": 1.0},
    )


def test_power_html(two_arm):
    res = mb.power(two_arm, "treatment", nsim=30, seed=4, method="wald")
    text = cells(res._repr_html_())
    assert text[0].startswith("Power by simulation")
    for header in ("power", "lower", "upper", "significant", "valid", "singular"):
        assert header in text
    assert f"{res.power:.4g}" in text and f"{res.lower:.4g}" in text
    assert str(res.n_significant) in text


def test_power_curve_html_has_header_and_table(two_arm):
    curve = mb.power_curve(
        two_arm, "treatment", along="subject", sizes=[10, 20], nsim=10, seed=4, method="wald"
    )
    markup = curve._repr_html_()
    text = cells(markup)
    assert text[0] == curve.summary().splitlines()[0]
    assert parse(markup).opened["tr"] == 1 + len(curve)
    for header in ("size", "power", "lower", "upper"):
        assert header in text
    for size, power in zip(curve["size"], curve["power"]):
        assert str(size) in text and f"{power:.4g}" in text
