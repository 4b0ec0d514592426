"""
Bootstrap distributions of every parameter
==========================================

Fit the reaction-time model by maximum likelihood, bootstrap it and draw one histogram
per parameter, with the fitted value and the 95 % interval marked.  The SD of the
slopes and the intercept-slope correlation are far from normal, which is why intervals
from the replicates beat estimate ± 2 SE for variance parameters.
"""

import mixboot as mb

df = mb.datasets.load("reaction")
fit = mb.fit("Reaction ~ 1 + Days + (1 + Days | Subject)", data=df, REML=False)
boot = mb.bootMer(fit, B=300, seed=42)
print(boot.confint(method="perc"))

boot.plot(kind="hist")
