"""
Bootstrapping a binomial GLMM
=============================

lme4's cbpp data: new cases of contagious bovine pleuropneumonia among the animals of
15 herds over four periods.  The fit is glmer's Laplace approximation; the bootstrap
refits each simulated data set as lme4's ``refit`` does.  The herd SD's distribution
is skewed with mass near zero.
"""

import mixboot as mb

cbpp = mb.datasets.load("cbpp")
g = mb.fit("cbind(incidence, size - incidence) ~ period + (1 | herd)", data=cbpp, family="binomial")
print(g.summary())

boot = mb.bootMer(g, B=100, seed=1)
print(boot.confint())
boot.plot(kind="density")
