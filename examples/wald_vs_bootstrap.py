"""Wald CIs versus bootstrap percentile CIs, and a bootstrap CI for the ICC.

Data: mixboot's built-in ``scores`` data set: the simulated ``reaction`` data renamed to the
guide's columns (score = Reaction, time = Days, subject = Subject) plus a
made-up between-subject 0/1 ``treatment`` indicator (alternate subjects).

Run:  python examples/wald_vs_bootstrap.py
"""

import numpy as np
import pandas as pd

import mixboot as mb

df = mb.datasets.load("scores")  # score, time, treatment, subject

result = mb.fit("score ~ time + treatment", data=df, groups="subject")

# -- fixed effects: Wald (normal approximation) vs bootstrap percentile ---------
# (the fit's default intervals use t with Satterthwaite's df; ddf="wald" asks for z)
wald = mb.fit("score ~ time + treatment", data=df, groups="subject", ddf="wald").conf_int(
    level=0.95
)
# B=200 keeps the example quick; use 1000 or more for publication-grade
# percentile intervals.  Returning the pandas Series r.fe_params (rather than
# an array) makes the bootstrap name its columns after the coefficients.
B = 200
boot = mb.bootMer(result, statistic=lambda r: r.fe_params, B=B, seed=42)
perc = boot.confint(level=0.95)  # indexed by coefficient (Series statistic)

comparison = pd.DataFrame(
    {
        "estimate": result.fe_params,
        "wald_lower": wald["lower"],
        "wald_upper": wald["upper"],
        "boot_lower": perc["lower"],
        "boot_upper": perc["upper"],
    }
)
print("95% CIs for the fixed effects")
print(comparison.round(3).to_string())


# -- ICC: a ratio of variance components, no Wald interval -----------------------
def icc(r):
    """Intra-class correlation: subject intercept variance / (that + residual variance)."""
    vc = r.varcorr
    tau2 = float(vc.loc[(vc["grp"] == "subject") & (vc["var1"] == "(Intercept)"), "vcov"].iloc[0])
    sigma2 = float(vc.loc[vc["grp"] == "Residual", "vcov"].iloc[0])
    return np.array([tau2 / (tau2 + sigma2)])


boot_icc = mb.bootMer(result, statistic=icc, B=B, seed=7)
icc_hat = icc(result)[0]
icc_lo, icc_hi = boot_icc.ci(level=0.95)[0]
print("icc estimates shape:", boot_icc.estimates.shape)
print(f"ICC estimate: {icc_hat:.3f}")
print(f"ICC 95% bootstrap CI: [{icc_lo:.3f}, {icc_hi:.3f}]")
# Asymmetry: a right- or left-skewed sampling distribution shows up as unequal arms.
print(f"ICC CI arms: below {icc_hat - icc_lo:.3f}, above {icc_hi - icc_hat:.3f}")

print("Done: Wald vs bootstrap CIs compared; ICC interval from the bootstrap.")
