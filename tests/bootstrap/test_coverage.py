"""Percentile intervals for fixed effects cover near their nominal level.

Data are simulated from a known random-intercept-and-slope model; each data
set is fitted and bootstrapped.  With N data sets, the coverage count is
Binomial(N, c) with c the true coverage (close to 0.95 for these designs; the
parametric bootstrap percentile interval is slightly anti-conservative with 18
groups).  We require the observed share in [0.86, 0.99]: a clearly broken
interval (e.g. wrong sign, sigma off by a factor) falls outside it, while
Monte Carlo spread (sd ~ sqrt(0.95 * 0.05 / N) ~ 0.018 for N = 150) keeps a
correct one inside with overwhelming probability.
"""

import numpy as np
import pytest

import mixboot as mb


@pytest.mark.slow
def test_percentile_interval_coverage():
    design = mb.datasets.load("reaction")[["Days", "Subject"]].copy()
    design["Reaction"] = 0.0
    truth = mb.fit(
        "Reaction ~ 1 + Days + (1 + Days | Subject)", mb.datasets.load("reaction"), REML=False
    )
    beta_true = np.array([250.0, 10.0])
    Y = mb.simulate(truth, nsim=150, seed=2024, beta=beta_true, sigma=25.0, theta=[1.0, 0.0, 0.25])
    covered = np.zeros((150, 2), dtype=bool)
    for j in range(150):
        fit = mb.fit(
            "Reaction ~ 1 + Days + (1 + Days | Subject)",
            design.assign(Reaction=Y[:, j]),
            REML=False,
        )
        ci = mb.bootMer(fit, B=199, seed=j).ci(level=0.95)[:2]
        covered[j] = (ci[:, 0] <= beta_true) & (beta_true <= ci[:, 1])
    share = covered.mean(axis=0)
    assert np.all((share >= 0.86) & (share <= 0.99)), share
