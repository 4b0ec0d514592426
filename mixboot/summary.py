"""Printed summaries in the layout lme4 and MixedModels.jl users read."""
from __future__ import annotations

import numpy as np

__all__ = ["summary_text", "format_table"]


def format_table(rows: list[list[str]], header: list[str], align_left: int = 1) -> str:
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    lines = []
    for r in [header] + rows:
        cells = [str(c).ljust(w) if i < align_left else str(c).rjust(w)
                 for i, (c, w) in enumerate(zip(r, widths))]
        lines.append(" ".join(cells).rstrip())
    return "\n".join(lines)


def _fmt(x: float, digits: int = 4) -> str:
    return "" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{x:.{digits}g}"


def _pval(p: float) -> str:
    return "<2e-16" if p < 2e-16 else f"{p:.3g}"


def _fixed_effects(r) -> list[str]:
    """The coefficient table with the fit's ddf: t tests with df, or Wald z tests."""
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
        rows = [[name, f"{b:.4f}", f"{se:.4f}", _df(df), f"{t:.2f}", _pval(p)]
                for name, (b, se, df, t, p) in zip(table.index, table.to_numpy())]
    else:
        header = ["", "Estimate", "Std. Error", "z value", "Pr(>|z|)"]
        rows = [[name, f"{b:.4f}", f"{se:.4f}", f"{z:.2f}", _pval(p)]
                for name, (b, se, _, z, p) in zip(table.index, table.to_numpy())]
    return [format_table(rows, header)] + note


def _df(df: float) -> str:
    return "Inf" if np.isinf(df) else f"{df:.2f}"


def summary_text(r) -> str:
    kind = "REML" if r.REML else "maximum likelihood"
    crit = "REML criterion" if r.REML else "deviance"
    if r.from_parameters:
        out = ["Linear mixed model from chosen parameters (not fitted) [mixboot]",
               f"Formula: {r.formula}", "", "Random effects:"]
    else:
        out = [f"Linear mixed model fit by {kind} [mixboot]",
               f"Formula: {r.formula}",
               f" {crit} at convergence: {r.objective:.4f}",
               f" AIC {r.aic:.2f}  BIC {r.bic:.2f}  logLik {r.loglik:.2f}",
               "", "Random effects:"]
    vc = r.varcorr
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
            rows.append([grp if i == 0 else "", name, _fmt(row["vcov"]),
                         _fmt(row["sdcor"]), " ".join(corr_cells)])
    out.append(format_table(rows, ["Groups", "Name", "Variance", "Std.Dev.", "Corr"], align_left=2))
    groups = ", ".join(f"{k}, {v}" for k, v in r.ngroups.items())
    method = {"wald": "Wald z tests",
              "kenward-roger": "t tests with Kenward-Roger's adjusted SE and degrees of freedom"
              }.get(r.ddf, "t tests with Satterthwaite's degrees of freedom")
    out += [f"Number of obs: {r.nobs}, groups: {groups}", "", f"Fixed effects ({method}):"]
    out += _fixed_effects(r)
    if r.spec.dropped:
        out.append(f"Dropped aliased columns: {', '.join(r.spec.dropped)}")
    notes = []
    if r.is_singular:
        notes.append("boundary (singular) fit: see is_singular")
    if not r.converged:
        notes.append(f"optimizer did not converge: {r.optsum.returncode}")
    out += [""] + notes if notes else []
    return "\n".join(out)
