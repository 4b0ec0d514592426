"""
An SD against a correlation
===========================

Each dot is a bootstrap replicate.  When the slope SD is small the correlation is
poorly determined and piles up at ±1: the replicates show the boundary of the
parameter space that a normal approximation hides.
"""

import mixboot as mb

df = mb.datasets.load("reaction")
fit = mb.fit("Reaction ~ 1 + Days + (1 + Days | Subject)", data=df, REML=False)
boot = mb.bootMer(fit, B=300, seed=3)

boot.pairplot("sd_Days|Subject", "cor_Days.(Intercept)|Subject")
