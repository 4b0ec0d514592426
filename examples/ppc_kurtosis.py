"""Simulation-based p-value for a scalar summary: kurtosis of the residuals.

Data: mixboot's built-in ``scores`` data set: the simulated ``reaction`` data renamed to the
guide's columns (score = Reaction, time = Days, subject = Subject) plus a
made-up between-subject 0/1 ``treatment`` indicator (alternate subjects).

``mb.checks.statistic`` evaluates T(y, result) on the observed response and on
each simulated one and returns p-values with the +1 correction,
(1 + #{T* as or more extreme}) / (1 + nsim).

Run:  python examples/ppc_kurtosis.py
"""

import numpy as np
from scipy.stats import kurtosis

import mixboot as mb

df = mb.datasets.load("scores")  # score, time, treatment, subject

result = mb.fit("score ~ time + treatment", data=df, groups="subject")


def residual_kurtosis(y, result):
    """T(y): excess kurtosis of y minus the fitted values."""
    return kurtosis(y - result.fittedvalues)


check = mb.checks.statistic(result, residual_kurtosis, nsim=200, seed=0, alternative="two-sided")
print(f"Observed kurtosis: {check.observed:.3f}")
print(
    f"Simulated kurtosis: median {np.median(check.simulated):.3f}, "
    f"95% range [{np.percentile(check.simulated, 2.5):.3f}, "
    f"{np.percentile(check.simulated, 97.5):.3f}]"
)
print(f"P(T* >= T) = {check.p_greater:.3f}, P(T* <= T) = {check.p_less:.3f}")
print(f"PPC p-value (kurtosis): {check.p_value:.3f}")

print("Done: kurtosis posterior predictive check.")
