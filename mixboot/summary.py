"""Printed summaries in the layout lme4 and MixedModels.jl users read."""

from __future__ import annotations

import numpy as np

__all__ = ["summary_text", "format_table", "fixed_effects_table", "varcorr_rows"]


def format_table(rows: list[list[str]], header: list[str], align_left: int = 1) -> str:
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    lines = []
    for r in [header] + rows:
        cells = [
            str(c).ljust(w) if i < align_left else str(c).rjust(w)
            for i, (c, w) in enumerate(zip(r, widths))
        ]
        lines.append(" ".join(cells).rstrip())
    return "\n".join(lines)


def _fmt(x: float, digits: int = 4) -> str:
    return "" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{x:.{digits}g}"


def _pval(p: float) -> str:
    return "<2e-16" if p < 2e-16 else f"{p:.3g}"


def fixed_effects_table(r) -> tuple[list[str], list[list[str]], list[str]]:
    """The coefficient table with the fit's ddf (t tests with df, or Wald z tests) as
    header, formatted rows and notes."""
    try:
        table = r.coef_table()
    except (ValueError, FloatingPointError, np.linalg.LinAlgError) as exc:
        # No df to be had (e.g. a large model from parameters): say so, print Wald z.
        table = r.coef_table("wald")
        note = [f"(degrees of freedom unavailable: {exc}; Wald z tests shown)"]
    else:
        note = []
    if "t value" in table.columns:
        header = ["", "Estimate", "Std. Error", "df", "t value", "Pr(>|t|)"]
        rows = [
            [name, f"{b:.4f}", f"{se:.4f}", _df(df), f"{t:.2f}", _pval(p)]
            for name, (b, se, df, t, p) in zip(table.index, table.to_numpy())
        ]
    else:  # an LMM's Wald table (with an empty df column) or a GLMM's
        header = ["", "Estimate", "Std. Error", "z value", "Pr(>|z|)"]
        rows = [
            [name, f"{b:.4f}", f"{se:.4f}", f"{z:.2f}", _pval(p)]
            for name, (b, se, z, p) in zip(table.index, table[header[1:]].to_numpy())
        ]
    return header, rows, note


def _df(df: float) -> str:
    return "Inf" if np.isinf(df) else f"{df:.2f}"


def glmm_title(r) -> str:
    """glmer's first line: the criterion by nAGQ."""
    how = {0: "the nAGQ = 0 approximation", 1: "Laplace approximation"}.get(
        r.nAGQ, f"adaptive Gauss-Hermite quadrature, nAGQ = {r.nAGQ}"
    )
    return f"Generalized linear mixed model fit by maximum likelihood ({how}) [mixboot]"


def header_lines(r) -> list[str]:
    """Title, formula and criteria of an LMM fit (or a model from parameters)."""
    if r.from_parameters:
        return [
            "Linear mixed model from chosen parameters (not fitted) [mixboot]",
            f"Formula: {r.formula}",
        ]
    kind = "REML" if r.REML else "maximum likelihood"
    crit = "REML criterion" if r.REML else "deviance"
    return [
        f"Linear mixed model fit by {kind} [mixboot]",
        f"Formula: {r.formula}",
        f" {crit} at convergence: {r.objective:.4f}",
        f" AIC {r.aic:.2f}  BIC {r.bic:.2f}  logLik {r.loglik:.2f}",
    ]


VARCORR_HEADER = ["Groups", "Name", "Variance", "Std.Dev.", "Corr"]


def varcorr_rows(vc) -> list[list[str]]:
    """lme4's VarCorr print: one row per variance, correlations beside the later term."""
    rows = []
    for grp, sub in vc.groupby("grp", sort=False):
        variances = sub[sub["var2"].isna()]
        corrs = sub[sub["var2"].notna()]
        names = list(variances["var1"].fillna(""))
        for i, (_, row) in enumerate(variances.iterrows()):
            corr_cells = []
            for j in range(i):
                hit = corrs[(corrs["var1"] == names[j]) & (corrs["var2"] == names[i])]
                corr_cells.append(f"{hit['sdcor'].iloc[0]:+.2f}" if len(hit) else "")
            name = row["var1"] if isinstance(row["var1"], str) else ""
            rows.append(
                [
                    grp if i == 0 else "",
                    name,
                    _fmt(row["vcov"]),
                    _fmt(row["sdcor"]),
                    " ".join(corr_cells),
                ]
            )
    return rows


def groups_line(r) -> str:
    groups = ", ".join(f"{k}, {v}" for k, v in r.ngroups.items())
    return f"Number of obs: {r.nobs}, groups: {groups}"


def fixed_effects_title(r) -> str:
    method = {
        "wald": "Wald z tests",
        "kenward-roger": "t tests with Kenward-Roger's adjusted SE and degrees of freedom",
    }.get(r.ddf, "t tests with Satterthwaite's degrees of freedom")
    return f"Fixed effects ({method}):"


def fit_notes(r) -> list[str]:
    """Dropped columns, a singular fit, a failed convergence."""
    notes = []
    if r.spec.dropped:
        notes.append(f"Dropped aliased columns: {', '.join(r.spec.dropped)}")
    if r.is_singular:
        notes.append("boundary (singular) fit: see is_singular")
    if not r.converged:
        notes.append(f"optimizer did not converge: {r.optsum.returncode}")
    return notes


def summary_text(r) -> str:
    out = header_lines(r) + [
        "",
        "Random effects:",
        format_table(varcorr_rows(r.varcorr), VARCORR_HEADER, align_left=2),
        groups_line(r),
        "",
        fixed_effects_title(r),
    ]
    header, rows, note = fixed_effects_table(r)
    out += [format_table(rows, header)] + note
    notes = fit_notes(r)
    if r.spec.dropped:
        out.append(notes.pop(0))
    out += [""] + notes if notes else []
    return "\n".join(out)
