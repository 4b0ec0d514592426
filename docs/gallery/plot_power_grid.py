"""
Power over subjects and items
=============================

In a crossed design both numbers matter.  ``power_grid`` estimates power at every
combination of sizes and draws a heat map.
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
grid = mb.power_grid(m, "cond", sizes={"subject": [10, 20, 30], "item": [6, 12]}, nsim=40, seed=1)

grid.plot()
