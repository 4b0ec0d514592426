"""
Ridge plot of fixed effects
===========================

MixedModels.jl's ``ridgeplot``: one density per fixed effect, stacked, each with its
shortest 95 % interval.  Leaving the intercept out keeps the effects of interest on a
readable scale.
"""

import mixboot as mb

df = mb.datasets.load("rt")
fit = mb.fit("rt ~ cond + (1 | subject) + (1 | item)", data=df, REML=False)
print(fit.fe_params)

boot = mb.bootMer(fit, B=200, seed=7)
boot.ridgeplot(include_intercept=False)
