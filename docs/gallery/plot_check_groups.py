"""
Predictive check: group means
=============================

Each subject's mean score against the band of its simulated means.  A model without
random slopes fits the means of subjects well, because the random intercepts absorb
them; try ``stat="std"`` to see what a missing slope does to the spread within subjects.
"""

import mixboot as mb

df = mb.datasets.load("scores")
fit = mb.fit("score ~ time + (1 | subject)", data=df)

chk = mb.checks.group_summary(fit, by="subject", stat="mean", nsim=100, seed=1)
print(f"share of subjects outside their band: {chk.share_outside:.2f}")
chk.plot()
