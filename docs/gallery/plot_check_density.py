"""
Predictive check: the response's density
========================================

The observed density of the scores against those of responses simulated from the fit.
The observed curve should look like one more draw from the cloud.
"""

import mixboot as mb

df = mb.datasets.load("scores")
fit = mb.fit("score ~ time + (1 | subject)", data=df)

chk = mb.checks.density(fit, nsim=50, seed=1)
chk.plot()
