"""
Predictive check: any statistic
===============================

The kurtosis of the marginal residuals (response minus fitted values) on the data and
on each simulated response, as in the interlace guide.  The p-value counts the simulated
kurtoses at least as far out as the observed one.
"""

import scipy.stats as st

import mixboot as mb

df = mb.datasets.load("scores")
fit = mb.fit("score ~ time + (1 | subject)", data=df)

chk = mb.checks.statistic(
    fit, lambda y, res: st.kurtosis(y - res.fittedvalues), nsim=200, seed=1, alternative="two-sided"
)
print(f"p = {chk.p_value:.3f}")
chk.plot()
