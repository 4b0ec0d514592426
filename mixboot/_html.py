"""HTML for notebooks: the ``_repr_html_`` of each result is built here.

Every piece of text passes through :func:`html.escape`; tables come either from the
formatted rows the printed summaries use (:mod:`mixboot.summary`) or from a DataFrame's
``to_html(escape=True)``, so the notebook and the terminal show the same numbers.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence

import pandas as pd

from . import summary

__all__ = [
    "boot",
    "document",
    "frame_table",
    "glmm",
    "lmm",
    "lrt",
    "pbtest",
    "power",
    "power_curve",
    "rows_table",
]

_LEFT = ' style="text-align: left"'
_RIGHT = ' style="text-align: right"'


def rows_table(header: Sequence[str], rows: Iterable[Sequence[str]], *, align_left: int = 1) -> str:
    """A table of already formatted cells; the first ``align_left`` columns flush left."""

    def cells(tag: str, values: Sequence[str]) -> str:
        return "".join(
            f"<{tag}{_LEFT if i < align_left else _RIGHT}>{html.escape(str(v))}</{tag}>"
            for i, v in enumerate(values)
        )

    body = "".join(f"<tr>{cells('td', row)}</tr>" for row in rows)
    return (
        f'<table class="mixboot-table"><thead><tr>{cells("th", header)}</tr></thead>'
        f"<tbody>{body}</tbody></table>"
    )


def frame_table(frame: pd.DataFrame, *, digits: int = 6, index: bool = True) -> str:
    """A DataFrame as an escaped HTML table, floats to ``digits`` significant digits and
    missing values blank (pandas prints a nullable column's NA as "<NA>" otherwise)."""
    frame = frame.apply(_as_float_if_numeric)
    return frame.to_html(
        escape=True,
        index=index,
        na_rep="",
        border=0,
        classes="mixboot-table",
        float_format=lambda v: f"{v:.{digits}g}",
    )


def _as_float_if_numeric(col: pd.Series) -> pd.Series:
    if col.dtype != object and not isinstance(col.dtype, pd.api.extensions.ExtensionDtype):
        return col
    try:
        return pd.to_numeric(col).astype(float)
    except (TypeError, ValueError):
        return col


def document(
    title: str,
    lines: Sequence[str] = (),
    sections: Sequence[tuple[str, str]] = (),
    notes: Sequence[str] = (),
) -> str:
    """A titled block: text lines, then (heading, HTML) sections, then notes."""
    parts = ['<div class="mixboot-result">', f"<p><strong>{html.escape(title)}</strong>"]
    parts += [f"<br>{html.escape(line)}" for line in lines]
    parts.append("</p>")
    for heading, body in sections:
        parts.append(f"<p><em>{html.escape(heading)}</em></p>{body}")
    if notes:
        parts.append("<p>" + "<br>".join(html.escape(n) for n in notes) + "</p>")
    parts.append("</div>")
    return "".join(parts)


def _paragraph(line: str) -> str:
    return f"<p>{html.escape(line)}</p>"


def _random_effects(r) -> tuple[str, str]:
    table = rows_table(summary.VARCORR_HEADER, summary.varcorr_rows(r.varcorr), align_left=2)
    return "Random effects", table + _paragraph(summary.groups_line(r))


def _fixed_effects(r, title: str) -> tuple[tuple[str, str], list[str]]:
    header, rows, notes = summary.fixed_effects_table(r)
    return (title, rows_table(header, rows)), notes


def lmm(r) -> str:
    """lmer's summary: criteria, random effects, fixed effects with the fit's ddf, notes."""
    head = summary.header_lines(r)
    fixed, notes = _fixed_effects(r, summary.fixed_effects_title(r).rstrip(":"))
    return document(
        head[0],
        [line.strip() for line in head[1:]],
        [_random_effects(r), fixed],
        notes + summary.fit_notes(r),
    )


def glmm(r) -> str:
    """glmer's summary: family and link, criteria, random effects, Wald z tests, notes."""
    criteria = rows_table(
        ["AIC", "BIC", "logLik", "deviance", "df.resid"],
        [[f"{r.aic:.1f}", f"{r.bic:.1f}", f"{r.loglik:.1f}", f"{r.deviance:.1f}", str(r.df_resid)]],
        align_left=0,
    )
    fixed, notes = _fixed_effects(r, "Fixed effects (Wald z tests)")
    return document(
        summary.glmm_title(r),
        [f"Family: {r.family.name} ( {r.family.link.name} )", f"Formula: {r.formula}"],
        [("Criteria", criteria), _random_effects(r), fixed],
        notes + summary.fit_notes(r),
    )


def boot(b, level: float = 0.95) -> str:
    """B, seed, formula, failure counts and the percentile intervals on the reported scale."""
    samples = b.reported()
    table = pd.DataFrame(
        {
            "estimate": b.reported_estimate().reindex(samples.columns),
            "std. error": samples.std(ddof=1),
        }
    )
    if not b.has_estimate:
        table = table.drop(columns="estimate")
    bounds = b.confint("perc", level)
    pct = 100 * (1 - level) / 2
    table[f"{pct:g} %"] = bounds["lower"].to_numpy()
    table[f"{100 - pct:g} %"] = bounds["upper"].to_numpy()
    formula = b.meta.get("formula")
    lines = [f"Formula: {formula} (REML={b.meta.get('REML')})"] if formula else []
    lines.append(f"B = {b.B} replicates, seed {b.meta.get('seed_entropy')}")
    counts = (
        f"failed: {b.n_failed}, singular: {b.n_singular}, "
        f"non-converged: {b.n_nonconverged} (of {b.B} replicates)"
    )
    if b.n_stat_nan:
        counts += f"; statistic NaN in {b.n_stat_nan} replicates"
    return document(
        "Parametric bootstrap [mixboot]",
        lines + [counts],
        [(f"Percentile intervals ({100 * level:g}%)", frame_table(table))],
    )


def power(p) -> str:
    """The summary's lines and a one-row table of power, its interval and the counts."""
    text = p.summary().splitlines()
    table = pd.DataFrame(
        {
            "power": [p.power],
            "lower": [p.lower],
            "upper": [p.upper],
            "significant": [p.n_significant],
            "valid": [p.n_valid],
            "nsim": [p.nsim],
            "failed": [p.n_failed],
            "not converged": [p.n_nonconverged],
            "singular": [p.n_singular],
        }
    )
    return document(
        text[0],
        [line.strip() for line in text[1:]],
        [("Power (95% Clopper-Pearson interval)", frame_table(table, digits=4, index=False))],
    )


def power_curve(c) -> str:
    """The curve's title line and its table."""
    title = c.summary().splitlines()[0]
    return document(
        title, sections=[("Power by size", frame_table(c.table, digits=4, index=False))]
    )


def lrt(t) -> str:
    """lme4's anova() table of nested models, with the refit note."""
    return document(
        "Likelihood-ratio tests (chi-square reference)",
        [t.note] if t.note else [],
        [("Models, fewest parameters first", frame_table(t.table))],
    )


def pbtest(t) -> str:
    """PBmodcomp's two rows (chi-square and bootstrap p-values) and the replicate counts."""
    lines = [f"large: {t.formula_large}", f"small: {t.formula_small}"]
    if t.note:
        lines.append(t.note)
    lines.append(
        f"bootstrap: {t.n_valid} valid of B = {t.B} replicates"
        + (f" ({t.n_failed} failed, excluded)" if t.n_failed else "")
    )
    return document(
        "Parametric bootstrap likelihood-ratio test", lines, [("Tests", frame_table(t.table))]
    )
