"""
Power curve over the number of subjects
=======================================

Power of the condition effect in a subjects-by-items design, for 10 to 40 subjects,
with the Clopper-Pearson band of each estimate and the 80 % target.  Every size reuses
the same seed, so the curve is smooth without many replicates.
"""

import mixboot as mb

design = mb.design.crossed(subjects=20, items=10, within={"cond": ["a", "b"]})
m = mb.model(
    "rt ~ cond + (1 | subject) + (1 | item)",
    design,
    beta={"(Intercept)": 500.0, "condb": 15.0},
    sigma=60.0,
    re={"subject": 40.0, "item": 20.0},
    REML=False,
)
curve = mb.power_curve(
    m, "cond", along="subject", sizes=[10, 20, 30, 40], nsim=60, seed=1, method="wald"
)
print(curve.table)

curve.plot(target=0.8)
