"""Simulation-based power analysis for a two-group treatment effect.

Data: simulated inside the script with numpy, from a random-intercept model
y = beta_treatment * treatment + u[subject] + eps, with half the subjects
treated.  Each replicate simulates a data set, fits ``y ~ treatment`` with a
random intercept per subject, and tests the treatment coefficient.

B is kept small (40, and 20 per grid point) so the script runs in seconds; use a few
hundred replicates for a real power estimate (its Monte Carlo SE is
sqrt(power * (1 - power) / B)).

Run:  python examples/power_loop.py
"""

import numpy as np
import pandas as pd

import mixboot as mb

rng = np.random.default_rng(2024)


def power_lmm(
    n_subjects: int,
    n_obs: int,
    beta_treatment: float,
    sigma_subject: float = 1.0,
    sigma_resid: float = 1.0,
    B: int = 40,
    alpha: float = 0.05,
) -> float:
    """Estimated power for a two-group treatment effect in a random-intercept LMM."""
    n = n_subjects * n_obs
    significant = 0
    for _ in range(B):
        # Simulate data from the assumed model
        subject = np.repeat(np.arange(n_subjects), n_obs)
        treatment = (subject % 2).astype(float)  # half treated
        u = rng.normal(0, sigma_subject, n_subjects)  # random intercepts
        eps = rng.normal(0, sigma_resid, n)
        y = beta_treatment * treatment + u[subject] + eps
        df = pd.DataFrame({"y": y, "treatment": treatment, "subject": subject})

        result = mb.fit("y ~ treatment", data=df, groups="subject")

        # Test: is the treatment effect significant at level alpha?
        pval = result.pvalues["treatment"]
        if pval < alpha:
            significant += 1
    return significant / B


B = 40
power = power_lmm(n_subjects=40, n_obs=5, beta_treatment=0.5, B=B)
print(
    f"Estimated power: {power:.2f}  (B={B}, Monte Carlo SE {np.sqrt(power * (1 - power) / B):.2f})"
)

# Varying sample size: a small grid (the guide uses B=200 per point; 20 here
# for speed, so these numbers are rough)
results = {}
for n_subjects in [20, 40, 80]:
    results[n_subjects] = power_lmm(n_subjects=n_subjects, n_obs=5, beta_treatment=0.5, B=20)
    print(f"n={n_subjects}: power={results[n_subjects]:.2f}")

print("Done: power analysis finished.")
