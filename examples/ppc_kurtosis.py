"""Simulation-based p-value for a scalar summary: kurtosis of the residuals.

Data: mixboot's built-in ``scores`` data set: the simulated ``reaction`` data renamed to the
guide's columns (score = Reaction, time = Days, subject = Subject) plus a
made-up between-subject 0/1 ``treatment`` indicator (alternate subjects).

Run:  python examples/ppc_kurtosis.py
"""
import numpy as np
from scipy.stats import kurtosis

import mixboot as mb

df = mb.datasets.load("scores")   # score, time, treatment, subject

result = mb.fit("score ~ time + treatment", data=df, groups="subject")
y_sim = mb.simulate(result, nsim=200, seed=0)

# T(y): excess kurtosis of y minus the fitted values
y_obs = np.asarray(df["score"])
T_obs = kurtosis(y_obs - result.fittedvalues)
T_sim = np.array([
    kurtosis(y_sim[:, j] - result.fittedvalues)
    for j in range(y_sim.shape[1])
])

p_ppc = np.mean(np.abs(T_sim) >= np.abs(T_obs))
print(f"Observed kurtosis: {T_obs:.3f}")
print(f"Simulated kurtosis: median {np.median(T_sim):.3f}, "
      f"95% range [{np.percentile(T_sim, 2.5):.3f}, {np.percentile(T_sim, 97.5):.3f}]")
print(f"PPC p-value (kurtosis): {p_ppc:.3f}")

print("Done: kurtosis posterior predictive check.")
